// Command kubectl-bkcache is the kubectl plugin: `kubectl bkcache ...`.
package main

import (
	"context"
	"os"
	"runtime/debug"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/pkg/interrupt"
	"github.com/bkcache/bkcache/plugins/kubectl"
)

func main() {
	paceGC()
	ctx, stop := interrupt.Context(context.Background(), os.Stderr)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	err := kubectl.NewRootCommand(streams).ExecuteContext(ctx)
	code := interrupt.ExitCode(ctx, err)
	stop()
	os.Exit(code)
}

// paceGC lets the collector run less often. A run of the plugin is short and
// its heap small, and at Go's default pace (a cycle each time the heap
// doubles, from 4 MiB) collection took a tenth of an `images` run. A soft
// limit keeps a large helmfile's peak bounded; GOGC and GOMEMLIMIT, when
// set, are the user's choice and win.
func paceGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(1 << 30)
	}
}
