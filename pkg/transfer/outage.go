package transfer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bkcache/bkcache/pkg/blobfetch"
)

// OutageError is a cache's answer that its upstream cannot be reached and
// what was asked for is not cached. It is never retried: nothing changes
// before the upstream is back, and each retry would cost its backoff.
type OutageError struct {
	// Message is the cache's own, e.g. "upstream https://hub.bktencent.com
	// unreachable since 10:04:05 UTC; image blueking/x:1 is not cached".
	Message string
}

func (e *OutageError) Error() string { return "the cache says: " + e.Message }

// Temporary is false: go-containerregistry retries only temporary errors.
func (e *OutageError) Temporary() bool { return false }

// FailFast wraps the transport to a bkcache cache: its outage answer (a 503
// marked with blobfetch.OutageHeader) becomes an *OutageError carrying the
// cache's message, below go-containerregistry's retries, so that each
// request makes one attempt. Other answers pass unchanged.
func FailFast(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &failFast{next: next}
}

type failFast struct{ next http.RoundTripper }

func (f *failFast) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err != nil || !blobfetch.Outage(resp.StatusCode, resp.Header) {
		return resp, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, &OutageError{Message: registryMessage(body, resp.Status)}
}

// registryMessage is the first message of a registry error body, or the status.
func registryMessage(body []byte, status string) string {
	var doc struct {
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &doc) == nil && len(doc.Errors) > 0 && doc.Errors[0].Message != "" {
		return doc.Errors[0].Message
	}
	if s := strings.TrimSpace(string(body)); s != "" {
		return status + ": " + s
	}
	return status
}

// outageOf returns the cache's outage message inside err, if any.
func outageOf(err error) (string, bool) {
	var oe *OutageError
	if errors.As(err, &oe) {
		return oe.Message, true
	}
	return "", false
}

// outageText is the cache's outage message inside err without what was
// asked for ("upstream … unreachable since …"); "" when err is no outage.
func outageText(err error) string {
	msg, _ := outageOf(err)
	msg, _, _ = strings.Cut(msg, "; ")
	return msg
}

// outageSummary names the outage in a run's final error.
func outageSummary(outage string, failed int, what string) error {
	return fmt.Errorf("%d %s failed because the cache's upstream cannot be reached (%s); run the same command again once it answers (what was done is kept)", failed, what, outage)
}
