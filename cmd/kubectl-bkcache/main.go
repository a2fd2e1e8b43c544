// Command kubectl-bkcache is the kubectl plugin: `kubectl bkcache ...`.
package main

import (
	"context"
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/pkg/interrupt"
	"github.com/bkcache/bkcache/plugins/kubectl"
)

func main() {
	ctx, stop := interrupt.Context(context.Background(), os.Stderr)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	err := kubectl.NewRootCommand(streams).ExecuteContext(ctx)
	code := interrupt.ExitCode(ctx, err)
	stop()
	os.Exit(code)
}
