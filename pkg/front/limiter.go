package front

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// smallBlobMax: blobs up to this size (image configs, small layers) are
// "small" on the shared upstream limiter and pass ahead of big layers, so on
// a capped link a small image completes while big layers download.
// Manifests never wait on it: the proxy child fetches them.
const smallBlobMax = 1 << 20

// bigShareEvery: while a big layer waits, small downloads get at most this
// many bursts' worth of bytes in a row before the big one gets the next
// grant; big layers keep at least 1/(bigShareEvery+1) of the rate and never
// starve.
const bigShareEvery = 3

// limiterClock is the time the limiter runs on (a fake one in tests).
type limiterClock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// sharedLimiter caps the bytes per second read from the upstream by every
// download together (a token bucket of burst bytes), granting waiting small
// downloads before big ones. Grants are made one at a time, in order: the
// small queue first, the big one after bigShareEvery small bursts.
type sharedLimiter struct {
	rate  float64 // bytes per second
	burst int
	clk   limiterClock

	mu       sync.Mutex
	paid     time.Time    // the bucket is empty up to here: tokens(now) = min(burst, (now-paid)*rate)
	queues   [2][]*waiter // [classSmall], [classBig], each first come first served
	smallRun int          // bytes granted to small downloads in a row while a big one waited
	timed    bool         // a timer will dispatch again
}

const (
	classSmall = 0
	classBig   = 1
)

type waiter struct {
	n       int
	ready   chan struct{}
	granted bool
}

func newSharedLimiter(bytesPerSecond int64, burst int, clk limiterClock) *sharedLimiter {
	now := clk.Now()
	l := &sharedLimiter{rate: float64(bytesPerSecond), burst: max(burst, 1), clk: clk}
	l.paid = now.Add(-l.dur(l.burst)) // a full bucket
	return l
}

// dur is how long n bytes take at the rate.
func (l *sharedLimiter) dur(n int) time.Duration {
	return time.Duration(float64(n) / l.rate * float64(time.Second))
}

// Burst is the most one WaitN may ask for.
func (l *sharedLimiter) Burst() int { return l.burst }

// wait takes n bytes (at most Burst) for a download of the given class.
func (l *sharedLimiter) wait(ctx context.Context, n int, class int) error {
	w := &waiter{n: min(max(n, 1), l.burst), ready: make(chan struct{})}
	l.mu.Lock()
	l.queues[class] = append(l.queues[class], w)
	l.dispatchLocked()
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if w.granted {
			return nil
		}
		l.removeLocked(w, class)
		l.dispatchLocked()
		return context.Cause(ctx)
	}
}

func (l *sharedLimiter) removeLocked(w *waiter, class int) {
	q := l.queues[class]
	for i, x := range q {
		if x == w {
			l.queues[class] = append(q[:i:i], q[i+1:]...)
			return
		}
	}
}

// next picks the class of the next grant: small first, big after
// bigShareEvery bursts of small grants in a row while it waited.
func (l *sharedLimiter) next() (int, bool) {
	small, big := len(l.queues[classSmall]) > 0, len(l.queues[classBig]) > 0
	switch {
	case big && (!small || l.smallRun >= bigShareEvery*l.burst):
		return classBig, true
	case small:
		return classSmall, true
	}
	return 0, false
}

// dispatchLocked grants waiters while the bucket holds their bytes, and
// arms one timer for the next grant otherwise.
func (l *sharedLimiter) dispatchLocked() {
	for !l.timed {
		class, ok := l.next()
		if !ok {
			return
		}
		w := l.queues[class][0]
		now := l.clk.Now()
		if floor := now.Add(-l.dur(l.burst)); l.paid.Before(floor) {
			l.paid = floor // a bucket holds at most burst bytes
		}
		at := l.paid.Add(l.dur(w.n))
		if at.After(now) {
			l.timed = true
			l.clk.AfterFunc(at.Sub(now), func() {
				l.mu.Lock()
				l.timed = false
				l.dispatchLocked()
				l.mu.Unlock()
			})
			return
		}
		l.paid = at
		l.queues[class] = l.queues[class][1:]
		switch {
		case class == classBig || len(l.queues[classBig]) == 0:
			l.smallRun = 0
		default:
			l.smallRun += w.n
		}
		w.granted = true
		close(w.ready)
	}
}

// sizedLimit is one download's view of the shared limiter: small or big by
// the blob's size, known from a manifest before the download or from the
// upstream's Content-Length after its headers (unknown: big).
type sizedLimit struct {
	l    *sharedLimiter
	size atomic.Int64 // <= 0: unknown
}

func (s *sizedLimit) WaitN(ctx context.Context, n int) error {
	class := classBig
	if sz := s.size.Load(); sz > 0 && sz <= smallBlobMax {
		class = classSmall
	}
	return s.l.wait(ctx, n, class)
}

func (s *sizedLimit) Burst() int { return s.l.burst }
