package images

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// HeadFunc asks a registry whether a reference's manifest exists: (true, nil)
// when it does, (false, nil) when the registry answers "not found", an error
// when it cannot tell (unreachable, unauthorized). The edge that calls Check
// supplies it, so this package stays free of network clients.
type HeadFunc func(ctx context.Context, ref string) (bool, error)

// CheckResult is one image checked against a registry.
type CheckResult struct {
	// Reference is the image as listed, Target as asked of the registry.
	Reference string
	Target    string
	Missing   bool
	Err       error
}

// Check asks registry for each reference's manifest (repointed at it, as
// nodes pull through a cache or an intranet registry), parallel at most
// parallel at a time, and returns the results in the order given.
func Check(ctx context.Context, refs []string, registry string, parallel int, head HeadFunc) []CheckResult {
	out := make([]CheckResult, len(refs))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(parallel, 1))
	for i, ref := range refs {
		out[i] = CheckResult{Reference: ref, Target: imageref.Rewrite(ref, registry)}
		g.Go(func() error {
			found, err := head(ctx, out[i].Target)
			out[i].Missing, out[i].Err = err == nil && !found, err
			return nil // one image's failure is reported, not fatal to the others
		})
	}
	g.Wait() //nolint:errcheck // the goroutines return nil
	return out
}

// CheckError summarises a check that found missing images or could not ask.
type CheckError struct {
	Registry string
	Total    int
	Missing  []CheckResult
	Failed   []CheckResult
}

// CheckSummary returns an error when anything is missing or unknown.
func CheckSummary(registry string, results []CheckResult) error {
	e := &CheckError{Registry: registry, Total: len(results)}
	for _, r := range results {
		switch {
		case r.Err != nil:
			e.Failed = append(e.Failed, r)
		case r.Missing:
			e.Missing = append(e.Missing, r)
		}
	}
	if len(e.Missing)+len(e.Failed) == 0 {
		return nil
	}
	return e
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d images missing from %s", len(e.Missing), e.Total, e.Registry)
	if len(e.Failed) > 0 {
		fmt.Fprintf(&b, ", %d could not be checked", len(e.Failed))
	}
	b.WriteString(":")
	lines := make([]string, 0, len(e.Missing)+len(e.Failed))
	for _, r := range e.Missing {
		lines = append(lines, "\n  missing "+r.Target)
	}
	for _, r := range e.Failed {
		lines = append(lines, fmt.Sprintf("\n  unknown %s: %v", r.Target, r.Err))
	}
	sort.Strings(lines)
	b.WriteString(strings.Join(lines, ""))
	if len(e.Missing) > 0 {
		b.WriteString("\nthe missing ones are listed on stdout: copy them into the registry (docker bkcache push) or warm the cache (docker bkcache warm -f -)")
	}
	if len(e.Failed) > 0 {
		b.WriteString("\ncheck that the registry is reachable and that `docker login` holds its credentials (--insecure for plain HTTP or a self-signed certificate)")
	}
	return b.String()
}

// Only returns a list holding only the images of l named in refs.
func (l *List) Only(refs []string) *List {
	out := NewList()
	for _, r := range refs {
		if img, ok := l.byRef[r]; ok {
			c := *img
			c.Sources = append([]Source(nil), img.Sources...)
			out.byRef[r] = &c
		}
	}
	return out
}
