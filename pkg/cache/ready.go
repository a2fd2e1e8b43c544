package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
)

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(strings.ToLower(err.Error()), "no such image") || strings.Contains(strings.ToLower(err.Error()), "not found"))
}

func startError(ctx context.Context, eng Engine, spec Spec, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "address already in use") || strings.Contains(msg, "port is already allocated") {
		return fmt.Errorf("start container %s: port %d is in use on this host (%v); pass --port or free it", spec.ContainerName(), spec.Port, err)
	}
	return fmt.Errorf("start container %s: %w; last log lines:\n%s", spec.ContainerName(), engineError(eng, err), tailLogs(ctx, eng, spec.ContainerName(), 20))
}

// waitReady polls GET /v2/ until the cache answers, watching for the crash loop
// registry:2 enters when its upstream cannot be reached at start. since is
// when this start began: a crash is recognised in everything the container
// printed from then on, however many lines a restarted registry added after.
func waitReady(ctx context.Context, eng Engine, spec Spec, since time.Time, wait time.Duration, progress io.Writer) error {
	deadline := time.Now().Add(wait)
	url := spec.Scheme() + "://" + spec.LocalAddress() + "/v2/"
	httpc := insecureClient()
	httpc.Timeout = 2 * time.Second
	fmt.Fprintf(progress, "cache %s: waiting for %s\n", spec.Name, url)
	var lastErr error
	restarts := -1 // restarts seen at the first look: older ones are history, not this start
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := httpc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET %s answered %s", url, resp.Status)
		}
		lastErr = err
		c, ok, err := inspect(ctx, eng, spec.ContainerName())
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("container %s disappeared while starting; run \"docker bkcache up\" again", spec.ContainerName())
		}
		if restarts < 0 {
			restarts = c.RestartCount
		}
		if c.State != nil && (c.State.Restarting || c.RestartCount > restarts || c.State.Status == container.StateExited || c.State.Status == container.StateDead) {
			return crashError(ctx, eng, spec, c, since)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cache %s did not answer %s within %s (last error: %v); last log lines of %s:\n%s",
				spec.Name, url, wait, lastErr, spec.ContainerName(), tailLogs(ctx, eng, spec.ContainerName(), 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func crashError(ctx context.Context, eng Engine, spec Spec, c container.InspectResponse, since time.Time) error {
	all := logsSince(ctx, eng, spec.ContainerName(), since)
	logs := lastLines(all, 20)
	exit := 0
	if c.State != nil {
		exit = c.State.ExitCode
	}
	if spec.Layout == LayoutPlain && upstreamPanic(all, spec.UpstreamHost()) {
		if !strings.Contains(logs, "panic:") {
			logs = firstLine(all, "panic:") + "\n…\n" + logs
		}
		return fmt.Errorf("cache %s crashed on start (restarts: %d): registry:2 panics when it cannot reach its upstream %s; fix the link (DNS, proxy, firewall) and run \"docker bkcache up\" again, or \"docker bkcache down %s\" to stop the restart loop; last log lines:\n%s",
			spec.Name, c.RestartCount, spec.Upstream, spec.Name, logs)
	}
	advice := ""
	if spec.Layout == LayoutFront {
		advice = "; \"docker bkcache up --plain\" runs registry:2 alone"
	}
	return fmt.Errorf("cache %s exited on start (exit code %d, restarts: %d)%s; last log lines of %s:\n%s", spec.Name, exit, c.RestartCount, advice, spec.ContainerName(), logs)
}

// upstreamPanic says whether registry:2's logs show the panic of its proxy
// set-up when the upstream is unreachable (distribution registry/handlers/app.go
// panics on the error of proxy.NewRegistryPullThroughCache).
func upstreamPanic(logs, upstreamHost string) bool {
	return strings.Contains(logs, "panic:") && (strings.Contains(logs, "/v2/") || strings.Contains(logs, upstreamHost))
}

func firstLine(s, substr string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
