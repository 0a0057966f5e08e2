//go:build tools

// Package tools only pins the promtool command that testenv/tools.sh builds (to
// check the chart's PrometheusRule), so that `go mod tidy` keeps its
// dependencies in go.mod and go.sum.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
