#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sysctr contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: apply
short_description: Converge a host's system containers to a sysctr apply file
description:
  - >-
    Runs C(sysctr apply) on the managed host with a TOML file or directory there (O(src)), or with
    TOML text given to the task (O(content)): containers it lists are installed or updated, the
    others left alone (or uninstalled with O(prune)).
  - C(changed) and C(changes) are what sysctr reports; in check mode they are what
    C(sysctr apply --dry-run --json) predicts, and nothing is changed or fetched.
author:
  - sysctr contributors (@sysctr)
extends_documentation_fragment:
  - sysctr.sysctr.sysctr
  - sysctr.sysctr.sysctr.target
attributes:
  check_mode:
    support: full
    description: The plan of C(sysctr apply --dry-run); nothing is changed or pulled.
  diff_mode:
    support: full
    description: Each container to install, update or remove, with its image, digest, values and unit before and after.
options:
  src:
    description: A TOML file on the managed host, or a directory whose C(*.toml) files are read in name order.
    type: path
  content:
    description: The TOML text itself (C([[container]]) tables), written to a temporary file on the managed host.
    type: str
  prune:
    description: Also uninstall the containers the file does not list.
    type: bool
    default: false
notes:
  - A newer image behind an unchanged tag is left alone, as by C(sysctr apply); use M(sysctr.sysctr.container)
    with O(sysctr.sysctr.container#module:state=latest).
seealso:
  - module: sysctr.sysctr.container
'''

EXAMPLES = r'''
- name: Converge to the node's list
  sysctr.sysctr.apply:
    src: /etc/sysctr

- name: Converge to a list given here, removing what it does not name
  sysctr.sysctr.apply:
    prune: true
    content: |
      [[container]]
      name = "etcd"
      image = "registry.lan:5000/k8s/etcd:3.5"
      replace_vendor_unit = true
'''

RETURN = r'''
changes:
  description: Per container, what was done (or in check mode would be done) and why, as sysctr reports it.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The container.
      type: str
    action:
      description: V(installed), V(updated), V(removed), V(unchanged); in check mode V(install), V(update), V(remove), V(unchanged).
      type: str
    reason:
      description: Why (in check mode), as sysctr says it.
      type: str
  sample: [{"name": "etcd", "action": "update", "reason": "values of ETCD_NAME change"}]
notes:
  description: sysctr's notes (a unit ordered after one that is not there, a wait for the network).
  returned: always
  type: list
  elements: str
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sysctr.sysctr.plugins.module_utils.sysctr import COMMON_ARGS, Sysctr, describe_side


def main():
    argument_spec = dict(
        src=dict(type='path'),
        content=dict(type='str'),
        prune=dict(type='bool', default=False),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('src', 'content')],
        required_one_of=[('src', 'content')],
        supports_check_mode=True,
    )
    sysctr = Sysctr(module)
    source = module.params['src']
    if source is None:
        source = os.path.join(module.tmpdir, 'containers.toml')
        with open(source, 'w') as out:
            out.write(module.params['content'])
    flags = ['--prune'] if module.params['prune'] else []
    _rc, plan = sysctr.document(['apply', '--dry-run', '--json'] + flags + [source], 'ApplyResult')
    result = dict(changed=plan['changed'], notes=[], changes=[
        dict(name=c['name'], action=c['action'], reason=c.get('detail', '')) for c in plan['containers']])
    if module._diff:
        result['diff'] = [
            dict(before_header=c['name'], after_header=c['name'], before=describe_side(c.get('before')),
                 after=describe_side(c.get('after')))
            for c in plan['containers'] if c['action'] != 'unchanged']
    if module.check_mode or not plan['changed']:
        module.exit_json(**result)
    _rc, done = sysctr.document(['apply', '--json'] + flags + [source], 'ApplyResult')
    reasons = dict((c['name'], c.get('detail', '')) for c in plan['containers'])
    result.update(changed=done['changed'], notes=done.get('notes', []), changes=[
        dict(name=c['name'], action=c['action'], reason=reasons.get(c['name'], '')) for c in done['containers']])
    module.exit_json(**result)


if __name__ == '__main__':
    main()
