package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/transfer"
)

// PruneOptions say what a prune keeps and what it may delete.
type PruneOptions struct {
	// Keep are the images of the kept lists (upstream names or the cache's address).
	Keep []transfer.Entry
	// UnusedFor deletes what was not served for this long; 0: not by age.
	UnusedFor time.Duration
	// MaxSize deletes the least recently served until the store is under it; 0: no size.
	MaxSize int64
	// DryRun only plans.
	DryRun bool
	// Confirm is asked with the plan before anything is deleted; nil means yes.
	Confirm func(plan front.PrunePlan) (bool, error)
}

// PruneReport is what Prune planned and did.
type PruneReport struct {
	Name string `json:"name"`
	// Result holds the plan, and what was done unless DryRun.
	Result front.PruneResult `json:"result"`
	// OtherRegistries are kept images this cache does not serve (another upstream).
	OtherRegistries []string `json:"otherRegistries,omitempty"`
}

// ErrPruneCancelled is a prune the user declined; nothing was deleted.
var ErrPruneCancelled = errors.New("prune cancelled; nothing was deleted")

// Prune frees a front cache's storage while it serves: it asks the running
// cache's front for the plan, confirms it, then has the front delete. Nothing
// is deleted by this process: the front does it through registry:2.
func Prune(ctx context.Context, eng Engine, name string, opts PruneOptions) (PruneReport, error) {
	rep := PruneReport{Name: name}
	c, ok, err := inspect(ctx, eng, ContainerName(name))
	if err != nil {
		return rep, err
	}
	if !ok {
		return rep, notFound(name)
	}
	spec, _ := specFromLabels(c.Config.Labels)
	spec.Name = name
	if layoutOf(c.Config.Labels) != LayoutFront {
		return rep, fmt.Errorf("cache %s runs registry:2 alone (--plain): prune needs the front; run \"docker bkcache up --name %s\" without --plain to convert it (data kept)", name, name)
	}
	if c.State == nil || !c.State.Running {
		return rep, fmt.Errorf("cache %s is not running: prune works through the running cache; run \"docker bkcache up --name %s\" first", name, name)
	}
	pol := front.PrunePolicy{UnusedFor: opts.UnusedFor, MaxSize: opts.MaxSize}
	if len(opts.Keep) > 0 {
		pol.Keep, rep.OtherRegistries = keepRefs(spec, opts.Keep)
		if len(pol.Keep) == 0 {
			return rep, fmt.Errorf("none of the %d kept images is served by cache %s (upstream %s, address %s): pruning would keep nothing; check the list or the cache name",
				len(opts.Keep), name, spec.UpstreamHost(), spec.LocalAddress())
		}
	}
	if pol.Empty() {
		return rep, errors.New("say what to keep or free: --keep FILE (the next deployment's image list), --unused-for DURATION, or --max-size SIZE")
	}
	api, err := newFrontAPI(ctx, eng, c, spec, true)
	if err != nil {
		return rep, err
	}
	call := func(dry bool) (front.PruneResult, error) {
		return api.prune(ctx, front.PruneRequest{Policy: pol, DryRun: dry})
	}
	if rep.Result, err = call(true); err != nil {
		return rep, err
	}
	if opts.DryRun || len(rep.Result.Plan.Delete) == 0 && rep.Result.Plan.BlobsDeleted == 0 {
		return rep, nil
	}
	if opts.Confirm != nil {
		ok, err := opts.Confirm(rep.Result.Plan)
		if err != nil {
			return rep, err
		}
		if !ok {
			return rep, ErrPruneCancelled
		}
	}
	rep.Result, err = call(false)
	if err != nil && ctx.Err() != nil {
		return rep, fmt.Errorf("prune of cache %s interrupted: the cache is consistent; run prune again to finish: %w", name, err)
	}
	return rep, err
}

// keepRefs maps kept images onto this cache's repositories: those named by
// the upstream's host, or by the cache's own address.
func keepRefs(spec Spec, entries []transfer.Entry) (keep []front.KeepRef, other []string) {
	for _, e := range entries {
		if !serves(spec, e.Ref) && !cacheAddress(spec, e.Ref.Context().RegistryStr()) {
			other = append(other, e.Ref.Name())
			continue
		}
		k := front.KeepRef{Repo: e.Ref.Context().RepositoryStr()}
		switch r := e.Ref.(type) {
		case name.Digest:
			k.Digest = r.DigestStr()
		case name.Tag:
			k.Tag = r.TagStr()
		}
		keep = append(keep, k)
	}
	return keep, other
}

// cacheAddress says whether host:port names this cache (its local address,
// or any host on its port).
func cacheAddress(spec Spec, hostport string) bool {
	if hostport == spec.LocalAddress() {
		return true
	}
	_, port, err := net.SplitHostPort(hostport)
	return err == nil && port == strconv.Itoa(spec.Port)
}

// ParseAge reads --unused-for: a Go duration ("36h", "90m") or days ("30d").
func ParseAge(s string) (time.Duration, error) {
	v := strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n <= 0 || n > 100*365 {
			return 0, fmt.Errorf("duration %q: give days as e.g. 30d, or hours as 36h", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("duration %q: give days as e.g. 30d, or hours as 36h", s)
	}
	return d, nil
}
