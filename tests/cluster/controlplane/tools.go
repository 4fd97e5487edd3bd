//go:build tools

// Package tools records the commands this module builds, so that go mod tidy keeps their
// dependencies: the API server and controller manager come from k8s.io/kubernetes.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
