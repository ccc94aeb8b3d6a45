"""Unified permissions (R10) and data control (R11): menus, functions, interfaces, fields, 户号 scope."""  # noqa: E501
