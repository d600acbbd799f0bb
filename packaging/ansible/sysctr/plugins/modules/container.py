#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sysctr contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: container
short_description: Manage one system container installed by sysctr
description:
  - >-
    Installs, updates, starts, stops and removes a system container: an OCI image run by runc as a
    systemd service, installed by C(sysctr) on the managed host.
  - The task describes the whole container, as an entry of a C(sysctr apply) file does; what it
    does not give takes sysctr's default. A container that differs from the task (image, values,
    readiness, listen addresses) is updated, with sysctr's automatic rollback when its new
    deployment does not start.
  - >-
    Idempotent: what changed is decided by sysctr (C(apply --dry-run --json), C(pull --check --json), and
    what C(apply) and C(update) say they did), and a second run with the same arguments changes nothing.
  - In check mode nothing is changed or fetched; only O(state=latest) asks the registry for the
    digest behind the tag, without pulling layers.
  - Unlike C(containers.podman.podman_container), V(present) does not start a container it
    installs; V(started) does.
author:
  - sysctr contributors (@sysctr)
requirements:
  - systemd on the managed host, unless O(root) is given
extends_documentation_fragment:
  - sysctr.sysctr.sysctr
  - sysctr.sysctr.sysctr.target
attributes:
  check_mode:
    support: full
    description: Nothing is changed or pulled; the result predicts what a real run does.
  diff_mode:
    support: full
    description: The image reference and digest, the values, the service state and the rendered unit, before and after.
options:
  name:
    description: The container's name, which is also its systemd unit's (V(NAME.service)).
    type: str
    required: true
  image:
    description:
      - The image, as C(sysctr install) takes it (V(HOST[:PORT]/PATH[:TAG]), V(oci:DIR[:TAG]), V(oci-archive:PATH[:TAG])).
      - Required unless O(state=absent).
    type: str
  state:
    description:
      - V(started) installed, enabled and running.
      - V(present) installed and enabled; a new install is not started, a running container is left running.
      - V(stopped) installed and enabled, not running.
      - V(absent) uninstalled; its image stays in the store.
      - V(latest) as V(started), and updated when the image behind its reference has changed (sysctr
        rolls the update back when the new deployment does not start).
      - With O(root), V(started), V(present) and V(stopped) all mean installed and enabled.
    type: str
    choices: [started, present, stopped, absent, latest]
    default: started
  values:
    description: Template variables of the image (C(--set KEY=VALUE)); values not listed take the image's defaults.
    type: dict
    default: {}
  runtime:
    description: The OCI runtime to install it with (default V(runc)). Taken at install; an installed container keeps its own.
    type: path
  replace_vendor_unit:
    description:
      - Install even where the system's packages ship a unit of the same name (C(--replace-vendor-unit)).
      - Taken at install; an installed container keeps what it was installed with.
    type: bool
    default: false
  auto_update:
    description:
      - Whether C(sysctr update --all), the auto-update timer, updates it.
      - Taken at install; an installed container keeps what it was installed with.
    type: bool
    default: true
  listen:
    description:
      - Addresses systemd listens on for it (C(--listen)); the first connection starts it.
      - Such a container (or one whose image ships a socket unit) is V(started) when its socket listens,
        and V(stopped) with both its socket and its service stopped.
    type: list
    elements: str
    default: []
  ready:
    description: When it counts as ready (C(--ready)); by default, as the image says.
    type: str
    choices: [notify, started, healthy]
  health_cmd:
    description: A check run inside the container (C(/bin/sh -c)) until it passes, then at every interval.
    type: str
  start_timeout:
    description: How long a start may take to reach ready (a duration such as V(90s)).
    type: str
notes:
  - The image is verified as C(sysctr) verifies it (digests, the host's signature policy).
seealso:
  - module: sysctr.sysctr.apply
  - module: sysctr.sysctr.image
'''

EXAMPLES = r'''
- name: Run etcd as a system container
  sysctr.sysctr.container:
    name: etcd
    image: registry.lan:5000/k8s/etcd:3.5
    values:
      ETCD_NAME: "{{ inventory_hostname }}"
    replace_vendor_unit: true

- name: Follow the tag, rolled back by sysctr if the new image does not start
  sysctr.sysctr.container:
    name: etcd
    image: registry.lan:5000/k8s/etcd:3.5
    state: latest

- name: Put a container into an OS image being built
  sysctr.sysctr.container:
    name: etcd
    image: oci-archive:/srv/images/etcd.tar:3.5
    root: /var/tmp/image-root
  delegate_to: localhost

- name: Remove it
  sysctr.sysctr.container:
    name: etcd
    state: absent
'''

RETURN = r'''
actions:
  description: What was done, or in check mode what would be done, in words.
  returned: always
  type: list
  elements: str
  sample: ["update etcd: values of ETCD_NAME change", "start etcd.service"]
container:
  description:
    - The container as C(sysctr status --json) shows it afterwards; empty when absent.
    - In check mode, as it is before the task (empty when it would be installed).
  returned: always
  type: dict
  sample: {"name": "etcd", "state": "running", "unit": "etcd.service", "current": {"slot": 1, "image": "registry.lan:5000/k8s/etcd:3.5"}}
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sysctr.sysctr.plugins.module_utils.sysctr import (
    COMMON_ARGS, Sysctr, apply_file_entry, describe_side)

# What `sysctr status` says of a service that runs.
RUNNING = ('running', 'reloading')


def template_value(value):
    """A value as a template variable takes it: text, with YAML's booleans as true/false."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def entry_for(params, start):
    entry = dict(
        name=params['name'], image=params['image'], set=params['values'], start=start,
        replace_vendor_unit=params['replace_vendor_unit'], auto_update=params['auto_update'],
        runtime=params['runtime'], listen=params['listen'], ready=params['ready'],
        health_cmd=params['health_cmd'], start_timeout=params['start_timeout'])
    return apply_file_entry(entry)


class ContainerTask(object):
    """One run of the module: the plan from sysctr, then (unless in check mode) the changes."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.sysctr = Sysctr(module)
        self.offline = bool(self.params['root'])
        self.actions = []
        self.changed = False
        # Each side of the diff: (image, digest, values, unit), and whether it runs.
        self.before = (None, None)
        self.after = (None, None)

    def run(self):
        name = self.params['name']
        status = self.sysctr.status(name)
        if self.params['state'] == 'absent':
            self.absent(status)
        else:
            status = self.present(status)
            self.running_state(status)
        final = self.sysctr.status(name) if self.changed and not self.module.check_mode else status
        result = dict(changed=self.changed, actions=self.actions, container=final or {})
        if self.module._diff:
            result['diff'] = dict(before_header=name, after_header=name, before=describe_side(*self.before),
                                  after=describe_side(*self.after))
        self.module.exit_json(**result)

    def is_running(self, status):
        """Whether it runs: its service, or for a socket-activated container its socket (the
        service starts at the first connection)."""
        if self.offline or status is None:
            return None
        if self.socket_activated(status):
            return self.unit_active(status['socket'])
        return status.get('state') in RUNNING

    @staticmethod
    def socket_activated(status):
        return bool(status.get('socket'))

    def unit_active(self, unit, stopped=None):
        """Whether `unit` is active; with `stopped`, whether its state is other than those."""
        systemctl = self.module.get_bin_path('systemctl', required=True)
        rc, out, _err = self.module.run_command([systemctl, 'is-active', unit])
        if stopped is None:
            return rc == 0
        return out.strip() not in stopped

    def plan(self, params, start):
        """`sysctr apply --dry-run --json` of this container alone: action, reason, before, after."""
        path = os.path.join(self.module.tmpdir, 'container.toml')
        with open(path, 'w') as out:
            out.write(entry_for(params, start))
        _rc, doc = self.sysctr.document(['apply', '--dry-run', '--json', path], 'ApplyResult')
        return path, doc['containers'][0]

    def absent(self, status):
        if status is None:
            return
        current = status['current']
        as_installed = dict(self.params, image=current['image'], values=current['values'])
        _path, plan = self.plan(as_installed, start=False)
        self.before = (plan.get('before'), self.is_running(status))
        self.changed = True
        self.actions.append('uninstall %s' % self.params['name'])
        if not self.module.check_mode:
            self.sysctr.run(['uninstall', self.params['name']])

    def present(self, status):
        name = self.params['name']
        state = self.params['state']
        start = state in ('started', 'latest')
        path, plan = self.plan(self.params, start)
        action = plan['action']
        running = self.is_running(status)
        self.before = (plan.get('before'), running)
        self.after = (plan.get('after') or plan.get('before'), running)
        if state == 'latest':
            self.follow_the_tag(status, action)
        if action == 'unchanged':
            return status
        self.changed = True
        self.actions.append('%s %s: %s' % (action, name, plan.get('detail', '')))
        if action == 'install':
            self.after = (self.after[0], start if not self.offline else None)
        if self.module.check_mode:
            # An install starts what the state asks for itself; nothing else to predict.
            return None if action == 'install' else status
        _rc, done = self.sysctr.document(['apply', '--json', path], 'ApplyResult')
        self.changed = done['changed']
        return self.sysctr.status(name)

    def follow_the_tag(self, status, action):
        """state=latest: the digest behind the reference, from its source (manifest and config
        only), against what is installed; a newer one is pulled, and an installed container updated."""
        image = self.params['image']
        _rc, found = self.sysctr.document(['pull', '--check', '--json', image], 'PullCheck')
        available = found['manifest_digest']
        if action == 'unchanged':
            if available == status['current']['manifest_digest']:
                return
            self.changed = True
            self.actions.append('update %s: %s' % (self.params['name'], available))
            self.after = (dict(self.after[0], manifest_digest=available, unit=None), self.after[1])
            if not self.module.check_mode:
                _rc, done = self.sysctr.document(['update', '--json', self.params['name']], 'UpdateResult')
                self.changed = done['changed']
            return
        # An install or update takes the image from the store: the newest one first.
        if found['changed'] and found['stored_digest'] is not None:
            self.actions.append('pull %s: %s' % (image, available))
            self.after = (dict(self.after[0], manifest_digest=available, unit=None), self.after[1])
            if not self.module.check_mode:
                self.sysctr.run(['pull', image])
        elif found['changed']:
            self.after = (dict(self.after[0], manifest_digest=available), self.after[1])

    def running_state(self, status):
        if self.offline or status is None or not status.get('unit'):
            return
        state = self.params['state']
        units = [status['unit']]
        if self.socket_activated(status):
            units = [status['socket']] + units
        if state in ('started', 'latest') and not self.is_running(status):
            self.systemctl('start', units[0])
            self.after = (self.after[0], True)
        elif state == 'stopped':
            # Starting, restarting after a failure, or listening: all of it goes.
            to_stop = [unit for unit in units if self.unit_active(unit, stopped=('inactive', 'failed'))]
            for unit in to_stop:
                self.systemctl('stop', unit)
            if to_stop:
                self.after = (self.after[0], False)

    def systemctl(self, verb, unit):
        self.changed = True
        self.actions.append('%s %s' % (verb, unit))
        if self.module.check_mode:
            return
        systemctl = self.module.get_bin_path('systemctl', required=True)
        rc, out, err = self.module.run_command([systemctl, verb, unit])
        if rc != 0:
            self.module.fail_json(msg='systemctl %s %s failed: %s' % (verb, unit, (err or out).strip()), rc=rc,
                                  actions=self.actions)


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        image=dict(type='str'),
        state=dict(type='str', default='started', choices=['started', 'present', 'stopped', 'absent', 'latest']),
        values=dict(type='dict', default={}),
        runtime=dict(type='path'),
        replace_vendor_unit=dict(type='bool', default=False),
        auto_update=dict(type='bool', default=True),
        listen=dict(type='list', elements='str', default=[]),
        ready=dict(type='str', choices=['notify', 'started', 'healthy']),
        health_cmd=dict(type='str'),
        start_timeout=dict(type='str'),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[('state', 'started', ['image']), ('state', 'present', ['image']),
                     ('state', 'stopped', ['image']), ('state', 'latest', ['image'])],
        supports_check_mode=True,
    )
    module.params['values'] = dict((str(k), template_value(v)) for k, v in module.params['values'].items())
    ContainerTask(module).run()


if __name__ == '__main__':
    main()
