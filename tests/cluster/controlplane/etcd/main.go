// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the release
// Kubernetes pins, so the API server is tested against the storage it ships with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
