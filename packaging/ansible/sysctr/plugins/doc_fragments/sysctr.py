# -*- coding: utf-8 -*-
# Copyright: sysctr contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options shared by the modules: sysctr itself, and (TARGET) what it works on."""

    DOCUMENTATION = r'''
options:
  executable:
    description: The sysctr binary on the managed host, by path or by name in E(PATH).
    type: str
    default: sysctr
requirements:
  - sysctr on the managed host
'''

    TARGET = r'''
options:
  root:
    description:
      - Work on an OS image's root directory offline instead of the running host (C(sysctr --root)).
      - Files only; nothing is started or stopped, and units are enabled by symlinks.
    type: path
  storage:
    description: sysctr's storage directory (C(--storage)), inside O(root) when both are given.
    type: path
  authfile:
    description:
      - The registry credentials file (containers-auth.json(5)) to pull with, instead of sysctr's usual ones,
        as M(sysctr.sysctr.login) saved it.
    type: path
'''
