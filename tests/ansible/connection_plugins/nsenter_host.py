# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Reaches a booted test host (systemd-nspawn) without ssh: every command runs through
`nsenter -t LEADER -a` in all of the host's namespaces, cgroup included, with a clean
environment, as the test harness itself runs commands there. Files are copied with `cat` inside
the host, since the host's /tmp is its own tmpfs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = '''
name: nsenter_host
short_description: Run commands in a booted test host through nsenter
description:
  - Runs commands in all the namespaces of a host's leader process, with a clean environment.
author: sysctr contributors
options:
  leader:
    description: PID of the host's init, as seen from the controller.
    type: int
    required: true
    vars:
      - name: ansible_nsenter_pid
'''

import shlex
import subprocess

from ansible.errors import AnsibleError
from ansible.plugins.connection import ConnectionBase

# What the host's services see; nothing of the controller's environment leaks in.
HOST_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'LANG=C.UTF-8']


class Connection(ConnectionBase):
    transport = 'nsenter_host'
    has_pipelining = True
    has_tty = False

    def _connect(self):
        self._connected = True
        return self

    def _enter(self):
        return ['nsenter', '-t', str(self.get_option('leader')), '-a', '--', 'env', '-i'] + HOST_ENV

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        proc = subprocess.Popen(self._enter() + ['/bin/sh', '-c', cmd], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        with open(in_path, 'rb') as source:
            proc = subprocess.run(self._enter() + ['/bin/sh', '-c', 'cat > %s' % shlex.quote(out_path)],
                                  stdin=source, capture_output=True, check=False)
        if proc.returncode != 0:
            raise AnsibleError('copying %s to %s: %s' % (in_path, out_path, proc.stderr.decode(errors='replace')))

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        with open(out_path, 'wb') as dest:
            proc = subprocess.run(self._enter() + ['cat', in_path], stdout=dest, stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise AnsibleError('copying %s from the host: %s' % (in_path, proc.stderr.decode(errors='replace')))

    def close(self):
        self._connected = False
