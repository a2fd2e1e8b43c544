package transfer

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
)

func TestCheckOutputPath(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "old.tar")
	os.WriteFile(regular, []byte("old"), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	linkToRegular := filepath.Join(dir, "link.tar")
	os.Symlink(regular, linkToRegular)
	linkToFifo := filepath.Join(dir, "link-fifo")
	os.Symlink(fifo, linkToFifo)
	linkToNothing := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "gone"), linkToNothing)

	for _, tc := range []struct {
		path, want, wantErr string
	}{
		{path: filepath.Join(dir, "new.tar"), want: filepath.Join(dir, "new.tar")},
		{path: regular, want: regular},
		{path: linkToRegular, want: regular},
		{path: "/dev/null", wantErr: "is a character device, not a regular file"},
		{path: dir, wantErr: "is a directory, not a regular file"},
		{path: fifo, wantErr: "is a named pipe"},
		{path: linkToFifo, wantErr: "which is a named pipe"},
		{path: linkToNothing, wantErr: "symlink to a missing file"},
		{path: filepath.Join(dir, "no-such-dir", "a.tar"), wantErr: "does not exist; create it first"},
		{path: "", wantErr: "pass -o ARCHIVE"},
	} {
		got, err := CheckOutputPath(tc.path)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.path != "" && !strings.Contains(err.Error(), tc.path)) {
				t.Errorf("CheckOutputPath(%q) = %q, %v; want an error naming the path and %q", tc.path, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CheckOutputPath(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".probe-") {
			t.Errorf("probe file %s left behind", e.Name())
		}
	}
}

func TestSaveRefusesABadOutputBeforeDownloading(t *testing.T) {
	src := registrytest.Start(t)
	img, _ := registrytest.Image(2, 64*1024, "amd64")
	if _, err := src.Push("blueking/app:1", img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, out := range []string{dir, "/dev/null", filepath.Join(dir, "missing", "a.tar")} {
		_, err := Save(context.Background(), entries(t, src.Addr, "blueking/app:1"), out, SaveOptions{Insecure: true})
		if err == nil || !strings.Contains(err.Error(), out) {
			t.Errorf("save -o %s: %v, want an error naming the path", out, err)
		}
	}
	if n := src.BlobGets(); n != 0 {
		t.Errorf("the upstream sent %d blobs for saves refused by their output path; want 0", n)
	}
	if info, err := os.Stat("/dev/null"); err != nil || info.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("/dev/null is no longer a character device: %v %v", info.Mode(), err)
	}
}

func TestSaveThroughSymlinkAndToStdout(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	refs, digests := seed(t, src.Addr)
	dir := t.TempDir()

	// A link to a regular file: the file it names is replaced, the link stays.
	real := filepath.Join(dir, "real.tar")
	os.WriteFile(real, []byte("old"), 0o644)
	link := filepath.Join(dir, "link.tar")
	os.Symlink(real, link)
	if _, err := Save(context.Background(), entries(t, src.Addr, refs...), link, SaveOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Errorf("save -o LINK replaced the link itself")
	}
	fromFile, _ := os.ReadFile(real)

	// "-" writes the same archive to the stream.
	var stdout bytes.Buffer
	if _, err := Save(context.Background(), entries(t, src.Addr, refs...), StdoutPath, SaveOptions{Insecure: true, Stdout: &stdout}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), fromFile) {
		t.Errorf("archive on stdout (%d bytes) differs from the file (%d bytes)", stdout.Len(), len(fromFile))
	}
	piped := filepath.Join(dir, "piped.tar")
	os.WriteFile(piped, stdout.Bytes(), 0o644)
	if _, err := Load(context.Background(), piped, LoadOptions{To: dst.Addr, Insecure: true}); err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		if got := digestAt(t, dst.Addr+"/"+r); got != digests[r] {
			t.Errorf("%s: loaded digest %s, source %s", r, got, digests[r])
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) > 0 {
		t.Errorf("temporary files left beside the output: %v", left)
	}
}

// rewriteTar copies an archive, letting edit drop (return false) or change entries.
func rewriteTar(t *testing.T, data []byte, edit func(h *tar.Header, body []byte) ([]byte, bool), extra ...func(*tar.Writer)) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body, keep := edit(hdr, body)
		if !keep {
			continue
		}
		hdr.Size = int64(len(body))
		tw.WriteHeader(hdr)
		tw.Write(body)
	}
	for _, f := range extra {
		f(tw)
	}
	tw.Close()
	return out.Bytes()
}

func savedArchive(t *testing.T) (archive string, data []byte, dst *registrytest.Distribution, refs []string) {
	t.Helper()
	src := registrytest.StartDistribution(t)
	dst = registrytest.StartDistribution(t)
	refs, _ = seed(t, src.Addr)
	archive = filepath.Join(t.TempDir(), "bk-images.tar")
	if _, err := Save(context.Background(), entries(t, src.Addr, refs...), archive, SaveOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(archive)
	return archive, data, dst, refs
}

func assertNothingLoaded(t *testing.T, dst *registrytest.Distribution, refs []string) {
	t.Helper()
	for _, r := range refs {
		ref, _ := name.ParseReference(dst.Addr+"/"+r, name.Insecure)
		if _, err := remote.Head(ref); err == nil {
			t.Errorf("a refused archive left %s tagged at the target", r)
		}
	}
}

func TestLoadRefusesAnIncompleteArchiveBeforePushing(t *testing.T) {
	archive, data, dst, refs := savedArchive(t)
	// Drop the largest blob: a layer some image needs.
	var largest string
	var size int64
	rewriteTar(t, data, func(h *tar.Header, b []byte) ([]byte, bool) {
		if strings.HasPrefix(h.Name, "blobs/") && h.Size > size {
			largest, size = h.Name, h.Size
		}
		return b, true
	})
	incomplete := filepath.Join(filepath.Dir(archive), "incomplete.tar")
	os.WriteFile(incomplete, rewriteTar(t, data, func(h *tar.Header, b []byte) ([]byte, bool) { return b, h.Name != largest }), 0o644)
	_, err := Load(context.Background(), incomplete, LoadOptions{To: dst.Addr, Insecure: true})
	missing := "sha256:" + filepath.Base(largest)
	if err == nil || !strings.Contains(err.Error(), "is incomplete") || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "blueking/") && !strings.Contains(err.Error(), "library/") {
		t.Fatalf("incomplete archive: %v; want a refusal naming the image and blob %s", err, missing)
	}
	if strings.Contains(err.Error(), "again to retry") || strings.Contains(err.Error(), "bkcache-load-") {
		t.Errorf("the refusal gives retry advice or a temp path: %v", err)
	}
	assertNothingLoaded(t, dst, refs)
}

func TestLoadRefusesEntriesSaveDoesNotWrite(t *testing.T) {
	archive, data, dst, refs := savedArchive(t)
	dir := filepath.Dir(archive)
	for _, tc := range []struct {
		name string
		add  func(*tar.Writer)
		want string
	}{
		{"directory", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "blobs/sha256/x/", Typeflag: tar.TypeDir, Mode: 0o755})
		}, "a directory"},
		{"symlink", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + strings.Repeat("a", 64), Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
		}, "a symlink to /etc/passwd"},
		{"climbing path", func(tw *tar.Writer) {
			tw.WriteHeader(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
			tw.Write([]byte("x"))
		}, `unexpected entry "../escape"`},
	} {
		p := filepath.Join(dir, tc.name+".tar")
		os.WriteFile(p, rewriteTar(t, data, func(_ *tar.Header, b []byte) ([]byte, bool) { return b, true }, tc.add), 0o644)
		_, err := Load(context.Background(), p, LoadOptions{To: dst.Addr, Insecure: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "not written by") {
			t.Errorf("%s: %v; want a refusal saying %q", tc.name, err, tc.want)
		}
	}
	if _, err := Load(context.Background(), dir, LoadOptions{To: dst.Addr, Insecure: true}); err == nil || !strings.Contains(err.Error(), "is a directory") || strings.Contains(err.Error(), "copy it again") {
		t.Errorf("load -i DIR: %v", err)
	}
	assertNothingLoaded(t, dst, refs)
}

func TestLoadUncompressedNeedsNoTemporarySpace(t *testing.T) {
	archive, _, dst, refs := savedArchive(t)
	_, err := Load(context.Background(), archive, LoadOptions{To: dst.Addr, Insecure: true, TempDir: filepath.Join(t.TempDir(), "does-not-exist")})
	if err != nil {
		t.Fatalf("an uncompressed archive should load straight from the file: %v", err)
	}
	for _, r := range refs {
		digestAt(t, dst.Addr+"/"+r)
	}
}

func TestLoadZstdLongWindow(t *testing.T) {
	archive, _, dst, refs := savedArchive(t)
	long := archive + ".zst"
	if out, err := exec.Command("zstd", "-q", "--long=31", archive, "-o", long).CombinedOutput(); err != nil {
		t.Fatalf("zstd --long=31 (apt-get install zstd): %v: %s", err, out)
	}
	if _, err := Load(context.Background(), long, LoadOptions{To: dst.Addr, Insecure: true}); err != nil {
		t.Fatalf("a zstd --long=31 archive: %v", err)
	}
	for _, r := range refs {
		digestAt(t, dst.Addr+"/"+r)
	}
}

func TestLoadCompressedChecksFreeSpaceFirst(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test mounts a small tmpfs to stand for a full TMPDIR: run it as root (CI does)")
	}
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	img, _ := registrytest.Image(1, 24<<20, "amd64") // random bytes: the archive stays as big
	if err := registrytest.PushTo(src.Addr, "blueking/big:1", img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "big.tar.zst")
	if _, err := Save(context.Background(), entries(t, src.Addr, "blueking/big:1"), archive, SaveOptions{Insecure: true, Zstd: true}); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small-tmp")
	os.Mkdir(small, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount a 16 MiB tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", small).Run() })
	_, err := Load(context.Background(), archive, LoadOptions{To: dst.Addr, Insecure: true, TempDir: small})
	if err == nil || !strings.Contains(err.Error(), "of temporary space in "+small) {
		t.Fatalf("loading into a too small TMPDIR: %v; want a refusal naming the space needed", err)
	}
	if left, _ := os.ReadDir(small); len(left) > 0 {
		t.Errorf("the refused load left %d entries in the temporary directory", len(left))
	}
	assertNothingLoaded(t, dst, []string{"blueking/big:1"})
}

// An image name in index.json is checked as an image list's line is, for
// every image before the first push: ".." would land outside --prefix
// ("t/probe/../../etc/x" is "etc/x" to a registry), and an ESC would reach the
// terminal in a progress line.
func TestLoadRefusesHostileNamesBeforePushing(t *testing.T) {
	archive, data, dst, refs := savedArchive(t)
	for _, tc := range []struct{ name, refName, want string }{
		{"climbing", "127.0.0.1:5000/probe/../../etc/x:1", `path component ".."`},
		{"escape", "127.0.0.1:5000/probe/x\x1b[2J:1", "control or invisible formatting characters"},
		{"empty component", "127.0.0.1:5000/probe//x:1", `path component ""`},
	} {
		// The last image gets the hostile name: the ones before it must not be pushed either.
		edited := rewriteTar(t, data, func(h *tar.Header, b []byte) ([]byte, bool) {
			if h.Name != "index.json" {
				return b, true
			}
			var index v1.IndexManifest
			if err := json.Unmarshal(b, &index); err != nil {
				t.Fatal(err)
			}
			index.Manifests[len(index.Manifests)-1].Annotations[refNameAnnotation] = tc.refName
			out, err := json.Marshal(index)
			if err != nil {
				t.Fatal(err)
			}
			return out, true
		})
		p := filepath.Join(filepath.Dir(archive), tc.name+".tar")
		if err := os.WriteFile(p, edited, 0o644); err != nil {
			t.Fatal(err)
		}
		rep, err := Load(context.Background(), p, LoadOptions{To: dst.Addr, Prefix: "t", Insecure: true})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was loaded") {
			t.Errorf("%s: %v; want a refusal saying %q and nothing was loaded", tc.name, err, tc.want)
		} else if strings.ContainsRune(err.Error(), 0x1b) || strings.Contains(err.Error(), "run the same command again") {
			t.Errorf("%s: the refusal carries a raw ESC or retry advice: %q", tc.name, err)
		}
		if len(rep.Images) != 0 {
			t.Errorf("%s: %d images loaded before the refusal", tc.name, len(rep.Images))
		}
	}
	assertNothingLoaded(t, dst, append(refs, "t/etc/x:1"))
	var prefixed []string
	for _, r := range refs {
		prefixed = append(prefixed, "t/"+r)
	}
	assertNothingLoaded(t, dst, prefixed)
}
