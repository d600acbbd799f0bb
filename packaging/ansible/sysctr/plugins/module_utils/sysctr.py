# -*- coding: utf-8 -*-
# Copyright: sysctr contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Running sysctr on the managed host and reading its JSON documents.

Every decision the modules take comes from sysctr's exit status and its ``--json`` documents
(``apiVersion: sysctr/v1``), never from its text output.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

API_VERSION = 'sysctr/v1'

# The options every module takes to reach sysctr and its target.
COMMON_ARGS = dict(
    executable=dict(type='str', default='sysctr'),
    root=dict(type='path'),
    storage=dict(type='path'),
    authfile=dict(type='path'),
)


class Sysctr(object):
    """sysctr on the managed host, for one module run."""

    def __init__(self, module):
        self.module = module
        params = module.params
        self.executable = module.get_bin_path(params['executable'], required=True)
        self.root = params.get('root')
        self.storage = params.get('storage')
        self.commands = []

    def argv(self, args):
        argv = [self.executable]
        if self.root:
            argv += ['--root', self.root]
        if self.storage:
            argv += ['--storage', self.storage]
        return argv + list(args)

    def run(self, args, data=None, ok_codes=(0,)):
        """Runs ``sysctr ARGS``; fails the module with sysctr's own error on another exit status."""
        argv = self.argv(args)
        self.commands.append(argv)
        environ = {'RUST_BACKTRACE': '0', 'NO_COLOR': '1'}
        if self.module.params.get('authfile'):
            environ['REGISTRY_AUTH_FILE'] = self.module.params['authfile']
        rc, out, err = self.module.run_command(argv, data=data, binary_data=data is not None, environ_update=environ)
        if rc not in ok_codes:
            self.fail(rc, out, err, argv)
        return rc, out, err

    def fail(self, rc, out, err, argv):
        self.module.fail_json(
            msg=error_line(err) or 'sysctr exited %d' % rc, rc=rc, stdout=out, stderr=err, cmd=argv,
            commands=self.commands)

    def document(self, args, kind, data=None, ok_codes=(0,)):
        """Runs ``sysctr ARGS`` (which prints one --json document of ``kind``) and returns it with
        the exit status."""
        rc, out, err = self.run(args, data=data, ok_codes=ok_codes)
        try:
            doc = json.loads(out)
        except ValueError as exc:
            said = error_line(err)
            self.module.fail_json(msg='sysctr %s printed no JSON document: %s%s' % (
                args[0], exc, '; it said: %s' % said if said else ''), stdout=out, stderr=err)
        if doc.get('apiVersion') != API_VERSION or doc.get('kind') != kind:
            self.module.fail_json(
                msg='sysctr %s printed %s %s, not %s %s' % (
                    args[0], doc.get('apiVersion'), doc.get('kind'), API_VERSION, kind))
        return rc, doc

    def installed(self):
        """Installed containers by name, as ``sysctr list --json`` lists them."""
        _rc, doc = self.document(['list', '--json'], 'ContainerList')
        return dict((item['name'], item) for item in doc.get('items', []))

    def status(self, name):
        """``sysctr status --json NAME``, or None when no container of that name is installed."""
        if name not in self.installed():
            return None
        _rc, doc = self.document(['status', '--json', name], 'ContainerStatus')
        return doc

    def images(self):
        """Stored images by reference, as ``sysctr images --json`` lists them."""
        _rc, doc = self.document(['images', '--json'], 'ImageList')
        return dict((item['reference'], item) for item in doc.get('items', []))


def error_line(stderr):
    """sysctr's error: what follows its last ``error: `` on standard error, to the end (the lines
    of a message that spans several joined by spaces)."""
    lines = (stderr or '').splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith('error: ')]
    if not starts:
        return None
    rest = [lines[starts[-1]][len('error: '):]] + [line.strip() for line in lines[starts[-1] + 1:]]
    return ' '.join(part for part in rest if part)


def apply_file_entry(entry):
    """One ``[[container]]`` table of an apply file, in TOML, from a dict of its keys."""
    lines = ['[[container]]']
    for key in sorted(entry):
        value = entry[key]
        if value is None:
            continue
        lines.append('%s = %s' % (key, toml_value(value)))
    return '\n'.join(lines) + '\n'


def toml_value(value):
    """A TOML value: strings, booleans, integers, lists and tables of them."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(toml_value(v) for v in value) + ']'
    if isinstance(value, dict):
        return '{ ' + ', '.join('%s = %s' % (toml_string(str(k)), toml_value(v)) for k, v in sorted(value.items())) \
            + ' }'
    return toml_string(str(value))


def toml_string(text):
    """A TOML basic string. JSON's escapes are TOML's, once characters outside the BMP are kept as
    they are (TOML has no surrogate pairs) and DEL, which JSON leaves raw, is escaped."""
    return json.dumps(text, ensure_ascii=False).replace('\x7f', '\\u007f')


def describe_side(side, running=None):
    """A container's side of a diff (a `before` or `after` of `apply --dry-run --json`), as text;
    empty for a container that is not there. `running`, when known, is said too."""
    if side is None:
        return ''
    lines = ['image: %s' % side.get('image'),
             'manifest_digest: %s' % (side.get('manifest_digest') or '(not in the store; not fetched)')]
    values = side.get('values') or {}
    lines.append('values:%s' % ('' if values else ' {}'))
    lines.extend('  %s: %s' % (k, values[k]) for k in sorted(values))
    if running is not None:
        lines.append('running: %s' % ('yes' if running else 'no'))
    unit = side.get('unit')
    lines.append('unit:%s' % ('' if unit else ' (not known: the image is not in the store)'))
    if unit:
        lines.extend(('  ' + line) if line else '' for line in unit.splitlines())
    return '\n'.join(lines) + '\n'
