"""A project made by `pulumi new` from the e2e suite's local template."""

import pulumi

pulumi.export("greeting", pulumi.Config().require("greeting"))
