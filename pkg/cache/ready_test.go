package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// logEngine answers ContainerLogs with a fixed log, as the Engine API does
// for a container without a TTY (stdcopy frames), honouring Tail.
type logEngine struct {
	*fakeEngine
	lines []string
	asked client.ContainerLogsOptions
}

func (e *logEngine) ContainerLogs(_ context.Context, _ string, o client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	e.asked = o
	lines := e.lines
	var n int
	if _, err := fmt.Sscan(o.Tail, &n); err == nil && n < len(lines) {
		lines = lines[len(lines)-n:]
	}
	var b bytes.Buffer
	for _, l := range lines {
		// A stdcopy frame: stream 2 (stderr), three zero bytes, the length (big endian).
		hdr := []byte{2, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(l)+1))
		b.Write(hdr)
		b.WriteString(l + "\n")
	}
	return io.NopCloser(&b), nil
}

// registry:2 --plain in a crash loop: its panic is followed by the lines of
// the restarted registry, as many as the machine's speed lets it write before
// up looks. The crash is recognised in all of them, not in the last 20 only.
func TestCrashErrorReadsTheWholeStart(t *testing.T) {
	spec := Spec{Name: "crashy", Upstream: "http://127.0.0.1:1", Layout: LayoutPlain}.WithDefaults()
	for _, after := range []int{0, 5, 50, 500} {
		lines := []string{
			`time="2026-01-01T00:00:00Z" level=info msg="redis not configured"`,
			`panic: Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused`,
			"goroutine 1 [running]:",
		}
		for i := 0; i < after; i++ {
			lines = append(lines, fmt.Sprintf(`time="2026-01-01T00:00:01Z" level=info msg="restarted registry line %d"`, i))
		}
		eng := &logEngine{fakeEngine: newFakeEngine(), lines: lines}
		since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		c := container.InspectResponse{State: &container.State{Status: container.StateRunning, ExitCode: 0}, RestartCount: 1}
		err := crashError(context.Background(), eng, spec, c, since)
		if err == nil || !strings.Contains(err.Error(), "crashed on start") || !strings.Contains(err.Error(), "panic: Get") {
			t.Errorf("%d lines after the panic: %v; want \"crashed on start\" with the panic line", after, err)
		}
		if eng.asked.Tail != "" || eng.asked.Since != fmt.Sprintf("%d.%09d", since.Unix(), 0) {
			t.Errorf("logs asked with tail %q since %q; want all since the start", eng.asked.Tail, eng.asked.Since)
		}
		if n := strings.Count(err.Error(), "\n"); n > 25 {
			t.Errorf("%d lines after the panic: the message has %d lines, want the last 20 and the panic", after, n)
		}
	}
}
