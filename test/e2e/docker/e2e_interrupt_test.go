//go:build e2e

package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// slowProxy serves target at ratePerSec bytes/s per request and response body, on 127.0.0.1,
// so a download lasts long enough to be interrupted.
func slowProxy(t *testing.T, target string, ratePerSec int) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &slowBody{r: r.Body, rate: ratePerSec} // uploads too
		}
	}
	rp.ModifyResponse = func(r *http.Response) error {
		r.Body = &slowBody{r: r.Body, rate: ratePerSec}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type slowBody struct {
	r    io.ReadCloser
	rate int
}

func (s *slowBody) Read(p []byte) (int, error) {
	chunk := s.rate / 20
	if len(p) > chunk {
		p = p[:chunk]
	}
	time.Sleep(50 * time.Millisecond)
	return s.r.Read(p)
}

func (s *slowBody) Close() error { return s.r.Close() }

// interrupted runs a plugin command until a file matching waitFor appears in
// tmp, then signals it the way a user would, and returns its exit code.
//   - toPlugin: SIGINT straight to the plugin, as Ctrl-C on a terminal does
//     (the whole foreground process group gets it);
//   - otherwise SIGTERM to the docker CLI, as `timeout` or a service manager does.
func interrupted(t *testing.T, tmp, waitFor string, toPlugin bool, args ...string) result {
	t.Helper()
	return interruptedWhen(t, tmp, waitFor, func() bool {
		m, _ := filepath.Glob(filepath.Join(tmp, waitFor))
		return len(m) > 0
	}, 300*time.Millisecond, toPlugin, args...)
}

// interruptedWhen signals the command once ready() holds, after settle.
func interruptedWhen(t *testing.T, tmp, what string, ready func() bool, settle time.Duration, toPlugin bool, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig, "TMPDIR="+tmp)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s never happened; stderr:\n%s", what, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(settle) // well inside the work
	if toPlugin {
		pid := pluginPID(t, cmd.Process.Pid)
		syscall.Kill(pid, syscall.SIGINT)
	} else {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return result{out.String(), errb.String(), code}
}

// pluginPID is the docker-bkcache process the docker CLI started.
func pluginPID(t *testing.T, cli int) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut after the last ')'.
		fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(cli) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.HasSuffix(exe, "docker-bkcache") {
			return pid
		}
	}
	t.Fatalf("no docker-bkcache process under the docker CLI (pid %d)", cli)
	return 0
}

func assertEmpty(t *testing.T, what, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("%s %s holds %v after the interrupt; want nothing left", what, dir, names)
	}
}

func TestInterruptedSaveAndLoadCleanUp(t *testing.T) {
	up := registrytest.Start(t)
	img, _ := registrytest.Image(3, 4<<20, "amd64")
	if _, err := up.Push("blueking/big:1", img); err != nil {
		t.Fatal(err)
	}
	slow := slowProxy(t, up.URL, 2<<20)
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(slow+"/blueking/big:1\n"), 0o644)

	for _, tc := range []struct {
		name     string
		toPlugin bool
		want     int
	}{
		{"SIGINT to the plugin", true, 130},
		{"SIGTERM to the docker CLI", false, 143},
	} {
		t.Run("save/"+tc.name, func(t *testing.T) {
			tmp, outDir := t.TempDir(), t.TempDir()
			r := interrupted(t, tmp, "bkcache-save-*", tc.toPlugin,
				"bkcache", "save", "-f", list, "-o", filepath.Join(outDir, "bk.tar"), "--insecure")
			if r.code != tc.want {
				t.Errorf("exit code %d, want %d\n%s", r.code, tc.want, r)
			}
			assertEmpty(t, "TMPDIR", tmp)
			assertEmpty(t, "the output directory", outDir)
		})
	}

	// A zstd archive is unpacked into TMPDIR; the push goes to a slow target.
	archive := filepath.Join(t.TempDir(), "bk.tar.zst")
	mustDocker(t, "bkcache", "save", "-f", list, "-o", archive, "--insecure", "--zstd")
	target := registrytest.Start(t)
	slowTarget := slowProxy(t, target.URL, 1<<20)
	t.Run("load", func(t *testing.T) {
		tmp := t.TempDir()
		r := interrupted(t, tmp, "bkcache-load-*", true, "bkcache", "load", "-i", archive, "--to", slowTarget, "--insecure")
		if r.code != 130 {
			t.Errorf("exit code %d, want 130\n%s", r.code, r)
		}
		assertEmpty(t, "TMPDIR", tmp)
	})
}
