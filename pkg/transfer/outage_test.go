package transfer

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/pkg/blobfetch"
)

// A front's outage 503 is asked once and comes back as its message; any
// other 503 is retried as before.
func TestFailFast(t *testing.T) {
	const msg = "upstream https://hub.example unreachable since 10:04:05 UTC; image lib/a:1 is not cached"
	for _, c := range []struct {
		name      string
		marked    bool
		wantAsked int
	}{
		{"outage answer", true, 1},
		{"other 503", false, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			var asked atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v2/" {
					return
				}
				asked.Add(1)
				if c.marked {
					w.Header().Set(blobfetch.OutageHeader, "2026-01-01T10:04:05Z")
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"errors":[{"code":"UNAVAILABLE","message":"` + msg + `"}]}`)) //nolint:errcheck
			}))
			defer srv.Close()
			ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/lib/a:1", name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			_, err = remote.Image(ref, remote.WithTransport(FailFast(http.DefaultTransport)),
				remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 3}))
			var oe *OutageError
			if got := errors.As(err, &oe); got != c.marked {
				t.Fatalf("error %v: an outage %v, want %v", err, got, c.marked)
			}
			if c.marked && (oe.Message != msg || outageText(err) != "upstream https://hub.example unreachable since 10:04:05 UTC") {
				t.Errorf("outage message %q, text %q", oe.Message, outageText(err))
			}
			if n := asked.Load(); int(n) != c.wantAsked {
				t.Errorf("the manifest was asked %d times, want %d", n, c.wantAsked)
			}
		})
	}
}
