package front

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestLinkStateTransitions(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	unknown := linkState{since: t0}
	online := linkState{known: true, online: true, since: t0}
	offline := linkState{known: true, online: false, since: t0, outages: 1, lastError: "refused"}
	silentOff := linkState{known: true, online: false, since: t0, outages: 1, lastError: "timeout", silent: true}
	at := t0.Add(time.Minute)
	for _, tc := range []struct {
		name    string
		from    linkState
		ev      linkEvent
		err     string
		silent  bool
		online  bool
		changed bool
		probe   bool
		outages int64
		offline time.Duration // offlineTotal after
		reason  string
	}{
		{"start, upstream answers", unknown, probeAnswered, "", false, true, true, false, 0, 0, "unreachable"},
		{"start, upstream refuses", unknown, probeFailed, "refused", false, false, true, false, 1, 0, "unreachable"},
		{"start, upstream silent", unknown, probeFailed, "timeout", true, false, true, false, 1, 0, "not answering"},
		{"start, a request fails before the first probe", unknown, requestFailed, "cut", false, false, false, true, 0, 0, "unreachable"},
		{"online, a request fails: probe, stay online", online, requestFailed, "cut", false, true, false, true, 0, 0, "unreachable"},
		{"online, a request times out: probe", online, requestFailed, "deadline", true, true, false, true, 0, 0, "not answering"},
		{"online, probe fails: offline", online, probeFailed, "refused", false, false, true, false, 1, 0, "unreachable"},
		{"online, probe silent: offline, not answering", online, probeFailed, "timeout", true, false, true, false, 1, 0, "not answering"},
		{"online, probe answers: nothing changes", online, probeAnswered, "", false, true, false, false, 0, 0, "unreachable"},
		{"offline, probe answers: online, outage time added", offline, probeAnswered, "", false, true, true, false, 1, time.Minute, "unreachable"},
		{"offline silent, probe answers: online", silentOff, probeAnswered, "", false, true, true, false, 1, time.Minute, "unreachable"},
		{"offline, probe fails again: no new outage", offline, probeFailed, "refused", false, false, false, false, 1, 0, "unreachable"},
		{"offline, a request fails: the watcher probes anyway", offline, requestFailed, "cut", false, false, false, false, 1, 0, "unreachable"},
		{"offline refused, then silent: reason follows", offline, probeFailed, "timeout", true, false, false, false, 1, 0, "not answering"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, probe := tc.from.next(tc.ev, tc.err, tc.silent, at)
			if got.online != tc.online || changed != tc.changed || probe != tc.probe || got.outages != tc.outages ||
				got.offlineTotal != tc.offline || got.reason() != tc.reason {
				t.Errorf("next = %+v changed=%v probe=%v reason=%q", got, changed, probe, got.reason())
			}
			if changed && !got.since.Equal(at) {
				t.Errorf("since = %s, want %s", got.since, at)
			}
			if !changed && !got.since.Equal(tc.from.since) {
				t.Errorf("since moved without a change: %s", got.since)
			}
			if tc.err != "" && got.lastError != tc.err {
				t.Errorf("lastError = %q", got.lastError)
			}
		})
	}
	// The current outage counts in the total.
	st := linkState{known: true, since: t0, offlineTotal: time.Hour}
	if d := st.offlineFor(t0.Add(time.Minute)); d != time.Hour+time.Minute {
		t.Errorf("offlineFor = %s", d)
	}
}

func TestIsSilence(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
		{fmt.Errorf("GET: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("probe: %w", errNoAnswer), true},
		{errors.New("net/http: timeout awaiting response headers"), true},
		{errors.New("read: connection reset by peer"), false},
	} {
		if got := isSilence(tc.err); got != tc.want {
			t.Errorf("isSilence(%v) = %v", tc.err, got)
		}
	}
}

// /bkcache/ on the client port is guarded by htpasswd, except from loopback
// (where the unguarded loopback-only metrics listener is reachable anyway)
// and for the admin token (the CLI's way in from the bridge gateway).
func TestOwnEndpointsGuarded(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	file := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(file, []byte("bob:"+string(hash)+"\n"), 0o600)
	const token = "0123456789abcdef0123456789abcdef"
	open := func(w http.ResponseWriter, r *http.Request) {}
	guarded := &Server{auth: newHtpasswd(file, "r"), adminToken: token, ownMux: http.HandlerFunc(open)}
	unguarded := &Server{adminToken: token, ownMux: http.HandlerFunc(open)}
	for _, tc := range []struct {
		s                          *Server
		remote, user, pass, bearer string
		want                       int
	}{
		{guarded, "10.0.0.5:40000", "", "", "", http.StatusUnauthorized},
		{guarded, "10.0.0.5:40000", "bob", "wrong", "", http.StatusUnauthorized},
		{guarded, "10.0.0.5:40000", "bob", "pw", "", http.StatusOK},
		{guarded, "172.17.0.1:40000", "", "", token, http.StatusOK},
		{guarded, "172.17.0.1:40000", "", "", token[:31] + "0", http.StatusUnauthorized},
		{guarded, "172.17.0.1:40000", "", "", token + "0", http.StatusUnauthorized},
		{&Server{auth: newHtpasswd(file, "r"), ownMux: http.HandlerFunc(open)}, "172.17.0.1:40000", "", "", " ", http.StatusUnauthorized},
		{guarded, "127.0.0.1:40000", "", "", "", http.StatusOK},
		{guarded, "[::1]:40000", "", "", "", http.StatusOK},
		{unguarded, "10.0.0.5:40000", "", "", "", http.StatusOK},
	} {
		req := httptest.NewRequest(http.MethodGet, "/bkcache/status", nil)
		req.RemoteAddr = tc.remote
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		rec := httptest.NewRecorder()
		tc.s.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.remote, tc.user, rec.Code, tc.want)
		}
	}
}

// Prune wants the admin token whatever else passes the guard: loopback or
// htpasswd credentials are not enough.
func TestPruneWantsTheToken(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	file := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(file, []byte("bob:"+string(hash)+"\n"), 0o600)
	const token = "0123456789abcdef0123456789abcdef"
	s := &Server{auth: newHtpasswd(file, "r"), adminToken: token}
	s.ownMux = s.metricsHandler()
	for _, tc := range []struct {
		remote, user, bearer string
		want                 int
	}{
		{"127.0.0.1:40000", "", "", http.StatusUnauthorized},
		{"10.0.0.5:40000", "bob", "", http.StatusUnauthorized},
		{"172.17.0.1:40000", "", "wrong", http.StatusUnauthorized},
		{"172.17.0.1:40000", "", token, http.StatusBadRequest}, // past the token: an empty request
	} {
		req := httptest.NewRequest(http.MethodPost, "/bkcache/prune", nil)
		req.RemoteAddr = tc.remote
		if tc.user != "" {
			req.SetBasicAuth(tc.user, "pw")
		}
		if tc.bearer != "" {
			req.Header.Set("Authorization", "Bearer "+tc.bearer)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("prune from %s user %q bearer %q: %d, want %d", tc.remote, tc.user, tc.bearer, rec.Code, tc.want)
		}
	}
}

func TestSeenManifest(t *testing.T) {
	d := func(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }
	s := newSeen()
	s.manifest("lib/a", []byte(`{"schemaVersion":2,"config":{"digest":"`+d('a')+`","size":7},"layers":[{"digest":"`+d('b')+`","size":1000},{"digest":"bad","size":5}]}`))
	s.manifest("lib/index", []byte(`{"schemaVersion":2,"manifests":[{"digest":"`+d('c')+`","size":500}]}`))
	s.manifest("lib/head", nil) // a HEAD: no body, the repository still counts
	for _, tc := range []struct {
		digest string
		size   int64
		ok     bool
	}{
		{d('a'), 7, true}, {d('b'), 1000, true}, {d('c'), -1, false}, {"bad", -1, false},
	} {
		if n, ok := s.get(tc.digest); n != tc.size || ok != tc.ok {
			t.Errorf("get(%s) = %d, %v", tc.digest, n, ok)
		}
	}
	for repo, want := range map[string]bool{"lib/a": true, "lib/index": true, "lib/head": true, "lib/other": false} {
		if s.repo(repo) != want {
			t.Errorf("repo(%s) = %v", repo, !want)
		}
	}
}
