package docker

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client/pkg/jsonmessage"

	"github.com/bkcache/bkcache/pkg/transfer"
)

// progressDisplay shows long work the way docker pull does. On a terminal, the
// lines the work prints ("copied …", "warmed …") scroll above a live block:
// one bar per image in progress and an overall bar, each with bytes, rate and
// time left, drawn with docker's own progress renderer (jsonmessage). Off a
// terminal the lines pass through unchanged, so logs and pipes stay plain.
type progressDisplay struct {
	mu    sync.Mutex
	out   io.Writer
	tty   bool
	width func() uint
	meter *transfer.Meter
	buf   bytes.Buffer
	drawn int // lines of the live block on screen
	rate  rateWindow

	stop chan struct{}
	done chan struct{}
}

// maxBars bounds the live block; more images in progress are summed up in one line.
const maxBars = 8

func newProgress(dockerCli command.Cli) *progressDisplay {
	errOut := dockerCli.Err()
	return startProgress(errOut, errOut.IsTerminal(), func() uint { _, w := errOut.GetTtySize(); return w }, 200*time.Millisecond)
}

func startProgress(out io.Writer, tty bool, width func() uint, tick time.Duration) *progressDisplay {
	p := &progressDisplay{out: out, tty: tty, width: width, meter: transfer.NewMeter(), stop: make(chan struct{}), done: make(chan struct{})}
	if !tty {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.redraw()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// Meter is what the work reports its bytes to.
func (p *progressDisplay) Meter() *transfer.Meter { return p.meter }

// Write takes the work's lines.
func (p *progressDisplay) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadString('\n')
		if err != nil {
			p.buf.WriteString(line) // incomplete: wait for the rest
			break
		}
		if !p.tty {
			io.WriteString(p.out, line) //nolint:errcheck
			continue
		}
		p.clear()
		io.WriteString(p.out, line) //nolint:errcheck
		p.draw()
	}
	return len(b), nil
}

// Close stops the live block and leaves the screen with the lines only.
func (p *progressDisplay) Close() {
	p.mu.Lock()
	select {
	case <-p.stop:
		p.mu.Unlock()
		return
	default:
		close(p.stop)
	}
	p.mu.Unlock()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buf.Len() > 0 {
		p.buf.WriteString("\n")
		line := p.buf.String()
		p.buf.Reset()
		p.clear()
		io.WriteString(p.out, line) //nolint:errcheck
	}
	p.clear()
}

func (p *progressDisplay) redraw() {
	select {
	case <-p.stop:
		return
	default:
	}
	p.clear()
	p.draw()
}

// clear erases the live block: up to its first line, then to the end of the screen.
func (p *progressDisplay) clear() {
	if p.drawn > 0 {
		fmt.Fprintf(p.out, "\r\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

func (p *progressDisplay) draw() {
	s := p.meter.Snapshot()
	if s.ImagesTotal == 0 {
		return
	}
	lines := renderBlock(s, p.width(), p.rate.add(time.Now(), s.Current))
	for _, l := range lines {
		fmt.Fprintf(p.out, "\x1b[2K%s\n", l)
	}
	p.drawn = len(lines)
}

// renderBlock is the live block for a snapshot: a bar per image in progress
// (at most maxBars) and the overall bar, with bytes/s as measured recently.
func renderBlock(s transfer.Snapshot, width uint, bytesPerSecond float64) []string {
	if width == 0 {
		width = 200
	}
	w := uint16(min(width, 1<<15))
	var active []transfer.ImageProgress
	for _, img := range s.Images {
		if !img.Done && !img.Failed && !img.Started.IsZero() {
			active = append(active, img)
		}
	}
	idWidth := 0
	for _, img := range active[:min(len(active), maxBars)] {
		idWidth = max(idWidth, len(shortRef(img.ID)))
	}
	var lines []string
	for _, img := range active[:min(len(active), maxBars)] {
		bar := jsonmessage.RenderTUIProgress(jsonstream.Progress{Current: img.Current, Total: img.Total, Start: img.Started.Unix()}, w)
		lines = append(lines, fmt.Sprintf("%-*s  %s", idWidth, shortRef(img.ID), bar))
	}
	if n := len(active) - maxBars; n > 0 {
		lines = append(lines, fmt.Sprintf("… and %d more images in progress", n))
	}
	overall := jsonmessage.RenderTUIProgress(jsonstream.Progress{Current: s.Current, Total: s.Total, Start: s.Start.Unix()}, w)
	rate := ""
	if bytesPerSecond > 0 {
		rate = "  " + units.HumanSize(bytesPerSecond) + "/s"
	}
	lines = append(lines, fmt.Sprintf("%d/%d images  %s%s", s.ImagesDone, s.ImagesTotal, overall, rate))
	return lines
}

// shortRef drops the registry host from a reference for the bars, which are
// narrow; the lines above keep the full names.
func shortRef(ref string) string {
	if i := strings.Index(ref, "/"); i > 0 && strings.ContainsAny(ref[:i], ".:") {
		return ref[i+1:]
	}
	return ref
}

// rateWindow measures bytes/s over the last few seconds, so the rate follows
// the link now, not the average since the start.
type rateWindow struct {
	samples []rateSample
}

type rateSample struct {
	at    time.Time
	bytes int64
}

const rateSpan = 5 * time.Second

func (r *rateWindow) add(now time.Time, bytes int64) float64 {
	r.samples = append(r.samples, rateSample{now, bytes})
	for len(r.samples) > 2 && now.Sub(r.samples[1].at) > rateSpan {
		r.samples = r.samples[1:]
	}
	first := r.samples[0]
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(bytes-first.bytes) / dt
}
