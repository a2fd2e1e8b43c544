package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Engine is the part of the Docker Engine API a cache needs.
// github.com/moby/moby/client.APIClient satisfies it.
type Engine interface {
	Ping(ctx context.Context, options client.PingOptions) (client.PingResult, error)
	DaemonHost() string
	ImageInspect(ctx context.Context, image string, options ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImagePull(ctx context.Context, ref string, options client.ImagePullOptions) (client.ImagePullResponse, error)
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerInspect(ctx context.Context, container string, options client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	ContainerCreate(ctx context.Context, options client.ContainerCreateOptions) (client.ContainerCreateResult, error)
	ContainerStart(ctx context.Context, container string, options client.ContainerStartOptions) (client.ContainerStartResult, error)
	ContainerStop(ctx context.Context, container string, options client.ContainerStopOptions) (client.ContainerStopResult, error)
	ContainerRemove(ctx context.Context, container string, options client.ContainerRemoveOptions) (client.ContainerRemoveResult, error)
	ContainerLogs(ctx context.Context, container string, options client.ContainerLogsOptions) (client.ContainerLogsResult, error)
	CopyFromContainer(ctx context.Context, container string, options client.CopyFromContainerOptions) (client.CopyFromContainerResult, error)
}

// Labels bkcache keeps on a cache container. The spec label holds the public
// Spec (never the password); the hash label covers spec, config file and the
// front's binary, so a changed password or a new plugin version also recreates
// the container. The layout label says which layout runs; a container from an
// earlier bkcache without it runs the plain one.
const (
	LabelManaged = "io.bkcache.managed"
	LabelName    = "io.bkcache.name"
	LabelSpec    = "io.bkcache.spec"
	LabelHash    = "io.bkcache.hash"
	LabelLayout  = "io.bkcache.layout"
	LabelFront   = "io.bkcache.front" // sha256 of the front's binary
)

// specLabels are the labels of a cache container running spec with config;
// frontSum is the sha256 of the front's binary ("" for the plain layout).
func specLabels(spec Spec, config []byte, frontSum string) (map[string]string, error) {
	public, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec of cache %s: %w", spec.Name, err)
	}
	h := sha256.New()
	h.Write(public)
	h.Write(config)
	h.Write([]byte(frontSum))
	labels := map[string]string{
		LabelManaged: "true",
		LabelName:    spec.Name,
		LabelSpec:    string(public),
		LabelHash:    hex.EncodeToString(h.Sum(nil)),
		LabelLayout:  spec.Layout,
	}
	if frontSum != "" {
		labels[LabelFront] = frontSum
	}
	return labels, nil
}

// specFromLabels reads back the public Spec stored on a container.
func specFromLabels(labels map[string]string) (Spec, bool) {
	raw, ok := labels[LabelSpec]
	if !ok {
		return Spec{}, false
	}
	var s Spec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Spec{}, false
	}
	s.Layout = layoutOf(labels)
	return s, true
}

// layoutOf is the layout a container runs: its label, else plain (the guide's
// script and bkcache before the front made only plain caches).
func layoutOf(labels map[string]string) string {
	if l := labels[LabelLayout]; l != "" {
		return l
	}
	return LayoutPlain
}

// DiffSpecs lists the public fields that differ between two specs, as "field: old -> new".
func DiffSpecs(old, desired Spec) []string {
	var a, b map[string]any
	ja, _ := json.Marshal(old)
	jb, _ := json.Marshal(desired)
	_ = json.Unmarshal(ja, &a)
	_ = json.Unmarshal(jb, &b)
	var out []string
	for _, k := range sortedKeys(a, b) {
		va, vb := fmt.Sprint(orNone(a[k])), fmt.Sprint(orNone(b[k]))
		if va != vb {
			out = append(out, fmt.Sprintf("%s: %s -> %s", k, va, vb))
		}
	}
	return out
}

func orNone(v any) any {
	if v == nil {
		return "(none)"
	}
	return v
}

// sortedKeys is the union of the maps' keys, sorted.
func sortedKeys(ms ...map[string]any) []string {
	all := map[string]any{}
	for _, m := range ms {
		maps.Copy(all, m)
	}
	return slices.Sorted(maps.Keys(all))
}

// inspect returns the container or ok=false when it does not exist.
func inspect(ctx context.Context, eng Engine, name string) (container.InspectResponse, bool, error) {
	res, err := eng.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return container.InspectResponse{}, false, nil
		}
		return container.InspectResponse{}, false, engineError(eng, err)
	}
	return res.Container, true, nil
}

// engineError turns a connection failure into advice; other errors pass through.
func engineError(eng Engine, err error) error {
	if EngineDenied(err) {
		return fmt.Errorf("no permission to use the Docker engine at %s: %w; the engine's socket is there but this user may not open it: add the user to the docker group (sudo usermod -aG docker $USER, then log in again) or run the command with sudo", eng.DaemonHost(), err)
	}
	if client.IsErrConnectionFailed(err) || strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		return fmt.Errorf("cannot reach the Docker engine at %s: %w; start dockerd (systemctl start docker) or point DOCKER_HOST / --context at a running engine", eng.DaemonHost(), err)
	}
	return err
}

// EngineDenied says whether err is the engine's socket refusing this user
// (the moby client says "permission denied while trying to connect").
func EngineDenied(err error) bool {
	return err != nil && (errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "permission denied while trying to connect"))
}

// Ping checks the engine answers, with the advice engineError gives.
func Ping(ctx context.Context, eng Engine) error {
	if _, err := eng.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return engineError(eng, err)
	}
	return nil
}

// tailLogs returns the last n lines a container printed (stdout and stderr).
func tailLogs(ctx context.Context, eng Engine, name string, n int) string {
	rc, err := eng.ContainerLogs(ctx, name, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(n)})
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 1<<20)); err != nil && !errors.Is(err, io.EOF) {
		return buf.String() + fmt.Sprintf("(reading logs: %v)", err)
	}
	return strings.TrimRight(buf.String(), "\n")
}

// logsSince returns what a container printed (stdout and stderr) from since on
// (zero: since it was created), the first 4 MiB of it.
func logsSince(ctx context.Context, eng Engine, name string, since time.Time) string {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true}
	if !since.IsZero() {
		opts.Since = fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())
	}
	rc, err := eng.ContainerLogs(ctx, name, opts)
	if err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 4<<20)); err != nil && !errors.Is(err, io.EOF) {
		return buf.String() + fmt.Sprintf("(reading logs: %v)", err)
	}
	return strings.TrimRight(buf.String(), "\n")
}

// Logs copies a cache's container logs to stdout and stderr, following when asked.
func Logs(ctx context.Context, eng Engine, name string, follow bool, tail string, stdout, stderr io.Writer) error {
	cname := ContainerName(name)
	if _, ok, err := inspect(ctx, eng, cname); err != nil {
		return err
	} else if !ok {
		return notFound(name)
	}
	if tail == "" {
		tail = "all"
	}
	rc, err := eng.ContainerLogs(ctx, cname, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow, Tail: tail})
	if err != nil {
		return engineError(eng, err)
	}
	defer rc.Close()
	if _, err := stdcopy.StdCopy(stdout, stderr, rc); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read logs of container %s: %w", cname, err)
	}
	return nil
}

// errNotFound marks a cache that does not exist (errors.Is).
var errNotFound = errors.New("no such cache")

// notFoundError names the missing cache and what to do.
type notFoundError struct{ name string }

func (e notFoundError) Error() string {
	return fmt.Sprintf("no cache named %s (container %s not found); run \"docker bkcache status\" to list caches or \"docker bkcache up --name %s\" to create it", e.name, ContainerName(e.name), e.name)
}

func (notFoundError) Is(target error) bool { return target == errNotFound }

func notFound(name string) error { return notFoundError{name} }
