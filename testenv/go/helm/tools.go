//go:build tools

// Package tools only pins the helm command that testenv/tools.sh builds (for
// the chart tests), so that `go mod tidy` keeps its dependencies in go.mod and
// go.sum.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
