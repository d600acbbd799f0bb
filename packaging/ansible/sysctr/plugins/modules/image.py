#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sysctr contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: image
short_description: Manage an image in sysctr's store
description:
  - Pulls an image into C(sysctr)'s store on the managed host (verified as sysctr verifies every
    pull), keeps it at the newest digest behind its reference, or removes it.
  - In check mode nothing is fetched; O(state=latest) asks the image's source for its digest
    (manifest and config only) to say whether a pull would change the store.
author:
  - sysctr contributors (@sysctr)
extends_documentation_fragment:
  - sysctr.sysctr.sysctr
  - sysctr.sysctr.sysctr.target
attributes:
  check_mode:
    support: full
    description: Nothing is pulled or removed; V(latest) fetches the manifest only.
  diff_mode:
    support: full
    description: The digest stored under the reference, before and after.
options:
  name:
    description: The image, as C(sysctr pull) takes it.
    type: str
    required: true
  state:
    description:
      - V(present) in the store (pulled if missing; one already there is left as it is).
      - V(latest) in the store at the digest its source has now.
      - V(absent) removed from the store (C(sysctr rmi)); refused while a container uses it.
    type: str
    choices: [present, latest, absent]
    default: present
seealso:
  - module: sysctr.sysctr.container
'''

EXAMPLES = r'''
- name: Have etcd's image on the host before the maintenance window
  sysctr.sysctr.image:
    name: registry.lan:5000/k8s/etcd:3.5

- name: Keep it at the newest digest behind the tag
  sysctr.sysctr.image:
    name: registry.lan:5000/k8s/etcd:3.5
    state: latest
'''

RETURN = r'''
image:
  description: The image as the store holds it afterwards (in check mode, as it is); empty when absent.
  returned: always
  type: dict
  contains:
    reference:
      description: The canonical reference.
      type: str
    image_id:
      description: The digest of the image config.
      type: str
    manifest_digest:
      description: The digest of the manifest stored under the reference.
      type: str
  sample: {"reference": "registry.lan:5000/k8s/etcd:3.5", "image_id": "sha256:3f…", "manifest_digest": "sha256:9c…"}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sysctr.sysctr.plugins.module_utils.sysctr import COMMON_ARGS, Sysctr


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', default='present', choices=['present', 'latest', 'absent']),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    sysctr = Sysctr(module)
    name, state = module.params['name'], module.params['state']
    stored = stored_image(sysctr, name)
    before = stored['manifest_digest'] if stored else None
    changed, after = False, before
    if state == 'absent':
        changed, after = stored is not None, None
        if changed and not module.check_mode:
            sysctr.run(['rmi', name])
    else:
        if state == 'latest':
            # The digest its source has now: manifest and config only, never layers.
            _rc, found = sysctr.document(['pull', '--check', '--json', name], 'PullCheck')
            changed, after = found['changed'], found['manifest_digest']
        else:
            changed = stored is None
        if changed and not module.check_mode:
            _rc, pulled = sysctr.document(['pull', '--json', name], 'PullResult')
            changed, after = pulled['changed'], pulled['manifest_digest']
    image = stored or {}
    if changed and not module.check_mode:
        image = stored_image(sysctr, name) or {}
    result = dict(changed=changed, image=image)
    if module._diff:
        result['diff'] = dict(before=digest_line(before) if before else '', after=digest_line(after) if state != 'absent' else '')
    module.exit_json(**result)


def digest_line(digest):
    return 'manifest_digest: %s\n' % (digest or '(not known until pulled)')


def stored_image(sysctr, name):
    """The store's entry for the image (its reference resolved by sysctr, offline), or None."""
    _rc, doc = sysctr.document(['images', '--json', name], 'ImageList')
    items = doc.get('items', [])
    if not items:
        return None
    return dict((key, items[0][key]) for key in ('reference', 'image_id', 'manifest_digest'))


if __name__ == '__main__':
    main()
