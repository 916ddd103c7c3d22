//go:build tools

// Package tools pins the Prometheus server that hack/build-prometheus.sh compiles
// (`go build github.com/prometheus/prometheus/cmd/prometheus` from this module).
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
