package docker

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/docker/cli/cli/command"
)

// progressWriter shows the per-image lines a long job prints and, on a
// terminal, keeps a bar of images done below them. Off a terminal the lines
// pass through unchanged, so logs and pipes stay plain.
type progressWriter struct {
	mu    sync.Mutex
	out   io.Writer
	tty   bool
	total int
	done  int
	buf   bytes.Buffer
}

func newProgress(dockerCli command.Cli, total int) *progressWriter {
	return &progressWriter{out: dockerCli.Err(), tty: dockerCli.Err().IsTerminal(), total: total}
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadString('\n')
		if err != nil {
			p.buf.WriteString(line) // incomplete: wait for the rest
			break
		}
		if isImageLine(line) {
			p.done++
		}
		if p.tty {
			fmt.Fprintf(p.out, "\r\033[K%s", line)
			p.bar()
		} else {
			io.WriteString(p.out, line) //nolint:errcheck
		}
	}
	return len(b), nil
}

// isImageLine tells the lines that end one image's work.
func isImageLine(line string) bool {
	for _, prefix := range []string{"copied ", "FAILED ", "would copy ", "saved ", "loaded ", "warmed "} {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

func (p *progressWriter) bar() {
	if p.total == 0 {
		return
	}
	const width = 30
	filled := width * min(p.done, p.total) / p.total
	fmt.Fprintf(p.out, "[%s%s] %d/%d images", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), p.done, p.total)
}

// Close ends the bar's line on a terminal.
func (p *progressWriter) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.total > 0 {
		fmt.Fprint(p.out, "\r\033[K")
	}
}
