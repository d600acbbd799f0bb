#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sysctr contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: login
short_description: Save or remove a registry's credentials for sysctr's pulls
description:
  - Runs C(sysctr login) on the managed host, which checks the credentials against the registry
    and saves them in a containers-auth.json(5) file, or C(sysctr logout).
  - >-
    The registry is asked only when the saved credentials differ from the task's: a second run
    with the same credentials changes nothing and sends nothing.
author:
  - sysctr contributors (@sysctr)
extends_documentation_fragment:
  - sysctr.sysctr.sysctr
attributes:
  check_mode:
    support: full
    description: Says whether the credentials would be saved or removed; the registry is not asked.
  diff_mode:
    support: none
    description: No diff is returned; the credentials are never shown.
options:
  registry:
    description: The registry, V(HOST[:PORT]).
    type: str
    required: true
  username:
    description: The user name. Required unless O(state=absent).
    type: str
  password:
    description: The password or token, given to sysctr on its standard input.
    type: str
  authfile:
    description:
      - The auth file to write (C(--authfile)).
      - By default sysctr's, C($XDG_RUNTIME_DIR/containers/auth.json) or C(/run/containers/UID/auth.json),
        which does not outlive a reboot.
      - For pulls at boot and by the auto-update timer, give a file such as C(/etc/containers/auth.json), the same
        O(sysctr.sysctr.container#module:authfile) to the other modules, and C(REGISTRY_AUTH_FILE=) that file in
        C(/etc/default/sysctr), which C(sysctr-apply.service) and C(sysctr-auto-update.service) read.
    type: path
  tls_verify:
    description: Require HTTPS and verify the registry's certificate (V(false) for a plain HTTP registry).
    type: bool
  state:
    description: V(present) saves the credentials, V(absent) removes the registry's.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: sysctr.sysctr.image
'''

EXAMPLES = r'''
- name: Credentials for unattended pulls, also at boot
  sysctr.sysctr.login:
    registry: registry.lan:5000
    username: deploy
    password: "{{ vault_registry_token }}"
    authfile: /etc/containers/auth.json
'''

RETURN = r'''
authfile:
  description: The auth file that was (or would be) written.
  returned: always
  type: str
  sample: /etc/containers/auth.json
'''

import base64
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible_collections.sysctr.sysctr.plugins.module_utils.sysctr import Sysctr

# The largest auth file read.
MAX_AUTH_FILE = 4 * 1024 * 1024


def registry_name(given):
    """The registry as sysctr saves it: HOST[:PORT], from what a user may type
    (V(docker://HOST), V(https://HOST/))."""
    for prefix in ('docker://', 'https://', 'http://'):
        if given.startswith(prefix):
            given = given[len(prefix):]
    return given.rstrip('/')


def default_authfile():
    """The file `sysctr login` writes when given none (containers-auth.json(5))."""
    if os.environ.get('REGISTRY_AUTH_FILE'):
        return os.environ['REGISTRY_AUTH_FILE']
    runtime = os.environ.get('XDG_RUNTIME_DIR')
    if runtime:
        return os.path.join(runtime, 'containers', 'auth.json')
    return '/run/containers/%d/auth.json' % os.getuid()


def saved_auth(module, path, registry):
    """The `auth` saved for `registry` in `path`, or None."""
    try:
        with open(path, 'rb') as source:
            text = source.read(MAX_AUTH_FILE + 1)
    except (IOError, OSError):
        return None
    if len(text) > MAX_AUTH_FILE:
        module.fail_json(msg='%s is larger than %d bytes' % (path, MAX_AUTH_FILE))
    try:
        auths = json.loads(to_text(text)).get('auths') or {}
    except (ValueError, AttributeError) as exc:
        module.fail_json(msg='%s is not a containers-auth.json file: %s' % (path, exc))
    entry = auths.get(registry)
    return entry.get('auth') if isinstance(entry, dict) else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            registry=dict(type='str', required=True),
            username=dict(type='str'),
            password=dict(type='str', no_log=True),
            authfile=dict(type='path'),
            tls_verify=dict(type='bool'),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            executable=dict(type='str', default='sysctr'),
        ),
        required_if=[('state', 'present', ['username', 'password'])],
        supports_check_mode=True,
    )
    sysctr = Sysctr(module)
    params = module.params
    registry = registry_name(params['registry'])
    authfile = params['authfile'] or default_authfile()
    saved = saved_auth(module, authfile, registry)
    file_args = ['--authfile', params['authfile']] if params['authfile'] else []
    if params['state'] == 'absent':
        changed = saved is not None
        if changed and not module.check_mode:
            sysctr.run(['logout'] + file_args + [registry])
        module.exit_json(changed=changed, authfile=authfile)
    # sysctr saves the password without the line ending a file may have given it.
    password = params['password'].rstrip('\r\n')
    wanted = to_text(base64.b64encode(to_bytes('%s:%s' % (params['username'], password))))
    changed = saved != wanted
    if changed and not module.check_mode:
        args = ['login', '--username', params['username'], '--password-stdin'] + file_args
        if params['tls_verify'] is not None:
            args.append('--tls-verify=%s' % ('true' if params['tls_verify'] else 'false'))
        sysctr.run(args + [registry], data=to_bytes(params['password']))
    module.exit_json(changed=changed, authfile=authfile)


if __name__ == '__main__':
    main()
