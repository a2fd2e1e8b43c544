package front

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"
)

// linkEvent is what the front learnt about its upstream, from any path:
// start, the watcher's probe, a manifest, a blob, a login.
type linkEvent int

const (
	// probeAnswered: GET /v2/ got an HTTP answer.
	probeAnswered linkEvent = iota
	// probeFailed: GET /v2/ got no answer (refused, cut, or silent until its deadline).
	probeFailed
	// requestFailed: some request to the upstream failed at the connection
	// level, or through the proxy child did not answer in time: probe now.
	requestFailed
)

// linkState is the upstream's mode as the whole front sees it. Its
// transitions are pure (next), so they are tested as a table; upstream
// holds one behind a mutex and the watcher drives it.
type linkState struct {
	known     bool // a probe has decided the mode once
	online    bool
	since     time.Time // when the mode began
	lastError string
	// silent: the last failure was a deadline (the upstream accepted and
	// never answered), as opposed to a refusal or a cut.
	silent bool
	// outages counts transitions to offline; offlineTotal sums finished
	// outages (the current one is added by offlineFor).
	outages      int64
	offlineTotal time.Duration
}

// next applies ev at now. changed is true when the mode changed (or was
// decided the first time); probe is true when the watcher should probe at once.
func (st linkState) next(ev linkEvent, errText string, silent bool, now time.Time) (out linkState, changed, probe bool) {
	out = st
	if errText != "" {
		out.lastError, out.silent = errText, silent
	}
	switch ev {
	case probeAnswered:
		if st.known && st.online {
			return out, false, false
		}
		if st.known && !st.online {
			out.offlineTotal += now.Sub(st.since)
		}
		out.known, out.online, out.since, out.silent = true, true, now, false
		return out, true, false
	case probeFailed:
		if st.known && !st.online {
			return out, false, false
		}
		out.known, out.online, out.since = true, false, now
		out.outages++
		return out, true, false
	case requestFailed:
		// Only a probe decides: one failed request is a hint, not an outage.
		// Offline, the watcher probes on its own schedule anyway.
		return out, false, st.online || !st.known
	}
	return out, false, false
}

// offlineFor is the time spent offline so far, the current outage included.
func (st linkState) offlineFor(now time.Time) time.Duration {
	d := st.offlineTotal
	if st.known && !st.online {
		d += now.Sub(st.since)
	}
	return d
}

// reason says in words why the upstream is offline: "not answering" when it
// let a deadline pass (a black hole: it accepts and stays silent),
// "unreachable" when it refused or cut the connection.
func (st linkState) reason() string {
	if st.silent {
		return "not answering"
	}
	return "unreachable"
}

// isSilence tells a deadline that passed without an answer from a refusal.
func isSilence(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errNoAnswer) {
		return true
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "timeout") || strings.Contains(s, "deadline exceeded") || strings.Contains(s, "not answering")
}

// errNoAnswer is the cause when an upstream (or the proxy child on its
// behalf) let a deadline pass without answering.
var errNoAnswer = errors.New("the upstream is not answering")
