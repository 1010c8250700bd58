//go:build tools

// Package tools pins the Pulumi CLI so that `go build` in this module builds
// exactly the version named in go.mod.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
