//go:build tools

// Package tools only pins the etcd server command (the root package of
// go.etcd.io/etcd/server/v3 is etcd's main) that testenv/tools.sh builds, so
// that `go mod tidy` keeps its dependencies in go.mod and go.sum.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
