package front

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/bkcache/bkcache/pkg/atomicfile"
)

// Files of the front beside registry:2's storage (<rootdirectory>/bkcache/).
const (
	// AdminTokenFile authorises prune requests, and /bkcache/ on the cache's
	// port when htpasswd guards it: only who can read the data directory
	// (root on the host, or the engine's users through it) can prune.
	AdminTokenFile = "admin-token"
	// keepFile holds the last prune's kept lists: the budget never evicts them.
	keepFile = "keep.json"
	trashDir = "trash"
)

// PruneRequest is the body of POST /bkcache/prune.
type PruneRequest struct {
	Policy PrunePolicy `json:"policy"`
	// DryRun only plans.
	DryRun bool `json:"dryRun,omitempty"`
}

// PruneResult is its answer: the plan, and what was done.
type PruneResult struct {
	Plan PrunePlan `json:"plan"`
	// Done is false for a dry run.
	Done bool `json:"done"`
	// ImagesDeleted, BlobsDeleted and BytesFreed are what really left.
	ImagesDeleted int   `json:"imagesDeleted"`
	BlobsDeleted  int   `json:"blobsDeleted"`
	BytesFreed    int64 `json:"bytesFreed"`
	BytesAfter    int64 `json:"bytesAfter"`
	// Skipped are images and blobs served or stored while the prune ran: kept.
	SkippedImages int `json:"skippedImages,omitempty"`
	SkippedBlobs  int `json:"skippedBlobs,omitempty"`
	// Error says where an interrupted or failed prune stopped; the storage
	// is consistent and a second prune finishes the job.
	Error string `json:"error,omitempty"`
}

// prune plans, and unless dry, deletes: manifests through the local
// registry:2 (which untags them), then the blobs registry:2's own garbage
// collection (--dry-run) finds unreferenced, except any blob served, stored
// or downloading since the prune began. Each step leaves registry:2's
// storage consistent, so an interrupt at any moment is harmless.
func (s *Server) prune(ctx context.Context, pol PrunePolicy, dry bool) (PruneResult, error) {
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	start := time.Now()
	inv, err := scanStorage(ctx, s.store.root)
	if err != nil {
		return PruneResult{}, fmt.Errorf("read the storage: %w", err)
	}
	res := PruneResult{Plan: makePlan(inv, pol, s.served.get, start)}
	if dry {
		return res, nil
	}
	res.Done = true
	if len(pol.Keep) > 0 {
		if err := s.saveKeep(pol.Keep); err != nil {
			s.logger.Printf("remember the kept list for the budget: %v", err)
		}
	}
	cutoff := start.Add(-time.Millisecond) // the records have millisecond steps
	for _, im := range res.Plan.Delete {
		if s.usedSince(im.Manifests, cutoff) {
			res.SkippedImages++
			continue
		}
		if err := s.deleteImage(ctx, im); err != nil {
			res.Error = err.Error()
			break
		}
		res.ImagesDeleted++
	}
	// Nothing to delete: spare the storage a garbage collection's full read.
	nothing := len(res.Plan.Delete) == res.SkippedImages && res.Plan.BlobsDeleted == 0
	if ctx.Err() == nil && !nothing {
		if err := s.collect(ctx, cutoff, &res); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}
	if ctx.Err() != nil && res.Error == "" {
		res.Error = "interrupted: " + ctx.Err().Error()
	}
	res.BytesAfter = storeBytes(context.WithoutCancel(ctx), s.store.root)
	if err := s.served.save(); err != nil {
		s.logger.Printf("save last-served times: %v", err)
	}
	s.logger.Printf("prune: %d images and %d blobs deleted, %d bytes freed, %d bytes stored; %d images and %d blobs in use kept",
		res.ImagesDeleted, res.BlobsDeleted, res.BytesFreed, res.BytesAfter, res.SkippedImages, res.SkippedBlobs)
	return res, nil
}

func (s *Server) usedSince(digests []string, cutoff time.Time) bool {
	for _, d := range digests {
		if !s.served.get(d).Before(cutoff) {
			return true
		}
	}
	return false
}

// deleteImage deletes an image's manifests through the local registry:2,
// the top one first (registry:2 drops its tags with it).
func (s *Server) deleteImage(ctx context.Context, im PruneImage) error {
	for _, dg := range im.Manifests {
		resp, err := s.localDo(ctx, http.MethodDelete, "/v2/"+im.Repo+"/manifests/"+dg, nil, 0)
		if err != nil {
			return fmt.Errorf("delete manifest %s of %s: %w", dg, im.Repo, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNotFound {
			return fmt.Errorf("delete manifest %s of %s: the local registry answered %s", dg, im.Repo, resp.Status)
		}
	}
	s.served.forget(im.Manifests...)
	return nil
}

// collect runs registry:2's garbage collection in dry-run mode (it only
// reads) and deletes the blobs it names, skipping any in use.
func (s *Server) collect(ctx context.Context, cutoff time.Time, res *PruneResult) error {
	eligible, err := s.unreferencedBlobs(ctx)
	if err != nil {
		return err
	}
	trash := filepath.Join(filepath.Dir(s.incoming), trashDir)
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return fmt.Errorf("trash dir: %w", err)
	}
	for _, dg := range eligible {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		size, ok, err := s.removeBlob(dg, cutoff, trash)
		if err != nil {
			return err
		}
		if !ok {
			res.SkippedBlobs++
			continue
		}
		res.BlobsDeleted++
		res.BytesFreed += size
	}
	os.RemoveAll(trash) //nolint:errcheck // emptied again at the next start
	return nil
}

// removeBlob moves one blob's directory out of the storage, unless it is
// being served, downloaded or stored, or was since cutoff. Served requests
// take their count before they look at storage, so under inUse's lock the
// move and a new request cannot cross.
func (s *Server) removeBlob(dg string, cutoff time.Time, trash string) (int64, bool, error) {
	s.inUse.mu.Lock()
	defer s.inUse.mu.Unlock()
	if s.inUse.n[dg] > 0 || !s.served.get(dg).Before(cutoff) {
		return 0, false, nil
	}
	s.flights.mu.Lock()
	_, flying := s.flights.m[dg]
	s.flights.mu.Unlock()
	if flying {
		return 0, false, nil
	}
	data := s.store.dataPath(dg)
	info, err := os.Stat(data)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	hexd := strings.TrimPrefix(dg, "sha256:")
	if err := os.Rename(filepath.Dir(data), filepath.Join(trash, hexd)); err != nil {
		return 0, false, fmt.Errorf("delete blob %s: %w", dg, err)
	}
	s.served.forget(dg)
	return info.Size(), true, nil
}

// unreferencedBlobs asks registry:2's garbage-collect --dry-run which blobs
// no manifest references.
func (s *Server) unreferencedBlobs(ctx context.Context) ([]string, error) {
	cmd := exec.CommandContext(ctx, s.opts.RegistryBin, "garbage-collect", "--dry-run", s.local.config)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("registry garbage-collect --dry-run: %w: %s", err, strings.TrimSpace(lastLines(stderr.String(), 5)))
	}
	return parseEligible(out), nil
}

// parseEligible reads "blob eligible for deletion: sha256:…" lines.
func parseEligible(out []byte) []string {
	var blobs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "blob eligible for deletion:"); ok {
			if dg := strings.TrimSpace(rest); sha256Ref.MatchString(dg) {
				blobs = append(blobs, dg)
			}
		}
	}
	return blobs
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (s *Server) saveKeep(keep []KeepRef) error {
	data, err := json.Marshal(keep)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(filepath.Dir(s.incoming), keepFile), data, 0o600)
}

func (s *Server) loadKeep() []KeepRef {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(s.incoming), keepFile))
	if err != nil {
		return nil
	}
	var keep []KeepRef
	json.Unmarshal(data, &keep) //nolint:errcheck // none kept is the fallback
	return keep
}

// ensureAdminToken writes a random token once; the CLI reads it from the
// data directory on the host.
func (s *Server) ensureAdminToken() error {
	p := filepath.Join(filepath.Dir(s.incoming), AdminTokenFile)
	if data, err := os.ReadFile(p); err == nil && len(bytes.TrimSpace(data)) >= 32 {
		s.adminToken = string(bytes.TrimSpace(data))
		return nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	s.adminToken = hex.EncodeToString(b)
	return atomicfile.WriteFile(p, []byte(s.adminToken+"\n"), 0o600)
}

// adminAuthorized: the request carries the admin token from the data
// directory (Authorization: Bearer TOKEN), compared in constant time.
func (s *Server) adminAuthorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.adminToken != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.adminToken)) == 1
}

// handlePrune is POST /bkcache/prune, on the cache's port or the metrics
// listener: only with the admin token.
func (s *Server) handlePrune(w http.ResponseWriter, r *http.Request) {
	if !s.adminAuthorized(r) {
		http.Error(w, "prune needs the token in the cache's data directory (bkcache/"+AdminTokenFile+")", http.StatusUnauthorized)
		return
	}
	var req PruneRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&req); err != nil {
		http.Error(w, "prune request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Policy.Empty() {
		http.Error(w, "prune needs a kept list, an unused-for duration or a maximum size", http.StatusBadRequest)
		return
	}
	res, err := s.prune(r.Context(), req.Policy, req.DryRun)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res) //nolint:errcheck // the client may be gone
}

// budgetKick asks the budget loop to look at the store's size.
func (s *Server) budgetKick() {
	if s.opts.MaxSize <= 0 {
		return
	}
	select {
	case s.budget <- struct{}{}:
	default:
	}
}

// budgetLoop keeps the store under Options.MaxSize: after a store (or a
// blob refused for lack of space) it evicts the least recently served
// images that the last prune's kept lists do not name and nothing is using.
func (s *Server) budgetLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.budget:
		}
		if used := storeBytes(ctx, s.store.root); used <= s.opts.MaxSize {
			continue
		}
		res, err := s.prune(ctx, PrunePolicy{Keep: s.loadKeep(), MaxSize: s.opts.MaxSize}, false)
		switch {
		case err != nil:
			s.logger.Printf("budget: %v", err)
		case res.Error != "":
			s.logger.Printf("budget: %s", res.Error)
		}
		if res.BytesAfter > s.opts.MaxSize {
			s.logger.Printf("budget: the store holds %d bytes, over its budget of %d: what is left is kept or in use", res.BytesAfter, s.opts.MaxSize)
		}
		// Stores that end meanwhile are looked at together, a little later:
		// a store over budget with nothing to evict is not re-read per blob.
		select {
		case <-ctx.Done():
			return
		case <-time.After(budgetPause):
		}
	}
}

// budgetPause spaces the budget's runs.
const budgetPause = 2 * time.Second
