//go:build tools

// Package tools pins the Python language host. Since the host moved into a
// module of its own, the Go module proxy serves it at no version; v3.68.0 is the
// newest sdk/v3 release that still contains it as a package.
package tools

import (
	_ "github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python"
)
