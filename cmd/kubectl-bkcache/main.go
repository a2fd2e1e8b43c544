// Command kubectl-bkcache is the kubectl plugin: `kubectl bkcache ...`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/plugins/kubectl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	if err := kubectl.NewRootCommand(streams).ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}
