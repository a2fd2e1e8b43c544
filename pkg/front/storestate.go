package front

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// spaceReserve is kept free beside every store: registry:2 writes its
// upload, its links and its scheduler state in the same file system.
const spaceReserve = 4 << 20

// warnFraction is the share of the budget or of the file system from which
// status warns.
const warnFraction = 0.9

// storeState is whether storing works: the last failure and since when, and
// whether it was for lack of space.
type storeState struct {
	mu       sync.Mutex
	lastErr  string
	since    time.Time
	diskFull bool
	need     int64 // bytes the failed store needed (disk full)
}

// failed records a store that did not happen.
func (st *storeState) failed(err error, need int64, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lastErr == "" {
		st.since = now
	}
	st.lastErr = err.Error()
	full := isNoSpace(err)
	if full && !st.diskFull {
		st.since = now
	}
	st.diskFull = full
	if full {
		st.need = max(need, 1)
	}
}

// stored records a store that worked: storing has resumed, unless the disk
// was full and still lacks the room the refused blob needed (a small blob
// may fit where a large one does not).
func (st *storeState) stored(free int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.diskFull && free < st.need {
		return
	}
	st.lastErr, st.diskFull, st.need, st.since = "", false, 0, time.Time{}
}

// storedOK records a store that worked.
func (s *Server) storedOK() {
	free, _, err := fsSpace(s.incoming)
	if err != nil {
		free = math.MaxInt64
	}
	s.stores.stored(free)
}

func (st *storeState) snapshot() (lastErr string, since time.Time, diskFull bool, need int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.lastErr, st.since, st.diskFull, st.need
}

// noSpaceError is a blob the cache has no room for; waiters get it as a 503
// before any byte (containerd then pulls from the upstream directly).
type noSpaceError struct {
	digest     string
	size, free int64
}

func (e *noSpaceError) Error() string {
	return fmt.Sprintf("the cache's disk is full: blob %s (%d bytes) does not fit in %d bytes free; cached content is still served; free space with \"docker bkcache prune\" or a larger disk",
		e.digest, e.size, e.free)
}

func (e *noSpaceError) Is(target error) bool { return target == syscall.ENOSPC }

// isNoSpace says whether err is a lack of space (ours or the file system's).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// fsSpace is the free and total bytes of the file system holding path.
func fsSpace(path string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// roomFor checks, once the upstream said a blob's size, that the partial
// file and registry:2's copy of it both fit; a blob that cannot be stored is
// refused before any byte, rather than fetched and lost.
func (s *Server) roomFor(digest string, size int64) error {
	if size < 0 {
		return nil
	}
	free, _, err := fsSpace(s.incoming)
	if err != nil {
		return nil // unknown: try, a failed write is caught as well
	}
	if 2*size+spaceReserve > free {
		err := &noSpaceError{digest: digest, size: size, free: free}
		s.stores.failed(err, 2*size+spaceReserve, time.Now())
		s.budgetKick() // the budget may make room for the next one
		return err
	}
	return nil
}

// writeNoSpace answers a blob refused for lack of space.
func writeNoSpace(w http.ResponseWriter, err *noSpaceError) {
	writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error(), err.digest)
}

// diskState is status's view of the disk: "ok", "warning" (from 90 % of the
// budget or the file system) or "disk full" (a store failed for lack of space
// and the file system has not gained the room it needed since).
func (s *Server) diskState(used, budget, free, total int64) string {
	_, _, full, need := s.stores.snapshot()
	if full && free < need {
		return "disk full"
	}
	if full {
		s.stores.stored(free) // space came back: storing resumes with the next blob
	}
	if (budget > 0 && float64(used) >= warnFraction*float64(budget)) ||
		(total > 0 && float64(total-free) >= warnFraction*float64(total)) {
		return "warning"
	}
	return "ok"
}

// cancelUpload ends an upload session that will not complete (DELETE on its
// URL), so registry:2 keeps nothing of it under _uploads.
func (s *Server) cancelUpload(ctx context.Context, session string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	resp, err := s.localDo(ctx, http.MethodDelete, session, nil, 0)
	if err != nil {
		s.logger.Printf("cancel upload %s: %v", session, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		s.logger.Printf("cancel upload %s: the local registry answered %s", session, resp.Status)
		return
	}
	// registry:2 2.8 writes the cancelled upload's hash state again as it
	// closes it (storage/blobwriter.go: Close after Cancel), leaving a
	// directory no session uses: remove it.
	p := strings.SplitN(session, "?", 2)[0]
	if m := uploadPath.FindStringSubmatch(p); m != nil {
		if uuid := path.Base(p); uploadUUID.MatchString(uuid) {
			os.RemoveAll(filepath.Join(s.store.root, "repositories", filepath.FromSlash(m[1]), "_uploads", uuid)) //nolint:errcheck // best effort
		}
	}
}

var uploadUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// DiskStatus is the store's part of /bkcache/status.
type DiskStatus struct {
	// UsedBytes is what registry:2's blobs weigh.
	UsedBytes int64 `json:"usedBytes"`
	// BudgetBytes is --max-size; 0: none.
	BudgetBytes int64 `json:"budgetBytes"`
	// FreeBytes and TotalBytes are the file system's.
	FreeBytes  int64 `json:"freeBytes"`
	TotalBytes int64 `json:"totalBytes"`
	// State is "ok", "warning" (90 % of the budget or the file system) or "disk full".
	State string `json:"state"`
	// StoreError is why the last blob could not be stored, and since when
	// storing fails; empty while storing works.
	StoreError      string `json:"storeError,omitempty"`
	StoreErrorSince string `json:"storeErrorSince,omitempty"`
}

// disk reports the store's use, budget, free space and state.
func (s *Server) disk(ctx context.Context) DiskStatus {
	d := DiskStatus{UsedBytes: storeBytes(ctx, s.store.root), BudgetBytes: s.opts.MaxSize}
	d.FreeBytes, d.TotalBytes, _ = fsSpace(filepath.Dir(s.incoming))
	d.State = s.diskState(d.UsedBytes, d.BudgetBytes, d.FreeBytes, d.TotalBytes)
	if msg, since, _, _ := s.stores.snapshot(); msg != "" {
		d.StoreError, d.StoreErrorSince = msg, since.UTC().Format(time.RFC3339)
	}
	return d
}
