// Command volctl runs the fusevol daemon and manages its volumes, snapshots and store.
package main

import (
	"context"
	"os"

	"github.com/fusevol/fusevol/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args, os.Stdout, os.Stderr))
}
