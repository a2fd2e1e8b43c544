package blobfetch

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch is what a fetch returns (inside a *DigestError) when the
// bytes the source sent do not hash to the digest asked for.
var ErrDigestMismatch = errors.New("digest mismatch")

// DigestError tells which digest was asked for and which one arrived.
type DigestError struct {
	URL       string
	Want, Got digest.Digest
	Size      int64
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("blob %s from %s: the source sent %d bytes with digest %s; retry later, or check the source registry",
		e.Want, e.URL, e.Size, e.Got)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestError) Is(target error) bool { return target == ErrDigestMismatch }

// UpstreamError is a non-success answer of the source to a blob request; the
// front relays it to its clients.
type UpstreamError struct {
	URL        string
	StatusCode int
	Header     http.Header
	Body       []byte // at most 64 KiB of it
}

func (e *UpstreamError) Error() string {
	msg := strings.TrimSpace(string(e.Body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return fmt.Sprintf("GET %s: the source answered %d %s %s", e.URL, e.StatusCode, http.StatusText(e.StatusCode), msg)
}

// OutageHeader marks a bkcache front's 503 that says its upstream cannot be
// reached and the content asked for is not cached: asking again before the
// upstream is back only costs time, so clients make one attempt.
const OutageHeader = "Bkcache-Upstream-Offline"

// Outage reports whether an answer is a front's outage 503 (OutageHeader).
func Outage(status int, h http.Header) bool {
	return status == http.StatusServiceUnavailable && h.Get(OutageHeader) != ""
}

// ErrTooLarge is what a download returns (inside a *SizeError) when the
// source sends, or announces, more bytes than the blob may have.
var ErrTooLarge = errors.New("blob larger than declared")

// SizeError tells how many bytes the blob may have and what the source did.
type SizeError struct {
	URL   string
	Limit int64
	What  string // e.g. "sent more bytes", "announced 2000 bytes"
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("blob from %s: the source %s than the %d bytes it may have; nothing kept, check the source registry", e.URL, e.What, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *SizeError) Is(target error) bool { return target == ErrTooLarge }
