package front

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func dg(c string) string { return "sha256:" + strings.Repeat(c, 64) }

// testInventory: three releases of one repository sharing a base layer, one
// multi-platform index, and one blob nothing references.
func testInventory(t0 time.Time) *inventory {
	m := func(d string, blobs ...string) *invManifest {
		return &invManifest{Digest: d, Stored: t0, Blobs: blobs}
	}
	return &inventory{
		Repos: map[string]*invRepo{
			"app": {
				Manifests: map[string]*invManifest{
					dg("1"): m(dg("1"), dg("c"), dg("b"), dg("d")), // r1: config c, base b, layer d
					dg("2"): m(dg("2"), dg("e"), dg("b"), dg("f")), // r2
					dg("3"): m(dg("3"), dg("0"), dg("b"), dg("a")), // r3
				},
				Tags: map[string]string{"r1": dg("1"), "r2": dg("2"), "r3": dg("3")},
			},
			"multi": {
				Manifests: map[string]*invManifest{
					dg("4"): {Digest: dg("4"), Stored: t0, Children: []string{dg("5")}},
					dg("5"): m(dg("5"), dg("6"), dg("7")),
				},
				Tags: map[string]string{"v1": dg("4")},
			},
		},
		Blobs: map[string]int64{
			dg("1"): 1, dg("2"): 1, dg("3"): 1, dg("4"): 1, dg("5"): 1,
			dg("b"): 100, dg("c"): 2, dg("d"): 10, dg("e"): 2, dg("f"): 20, dg("0"): 2, dg("a"): 30,
			dg("6"): 2, dg("7"): 40, dg("9"): 1000, // 9: unreferenced
		},
	}
}

func TestMakePlan(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(100 * 24 * time.Hour)
	served := map[string]time.Time{
		dg("1"): t0.Add(1 * time.Hour), dg("2"): t0.Add(80 * 24 * time.Hour), dg("3"): now.Add(-time.Hour),
		dg("5"): t0.Add(2 * time.Hour), // the index's platform manifest: the image counts from it
	}
	get := func(d string) time.Time { return served[d] }
	names := func(p PrunePlan) []string {
		var out []string
		for _, im := range p.Delete {
			out = append(out, im.Name())
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		pol       PrunePolicy
		want      []string
		freed     int64
		notCached int
	}{
		{"keep r3 only", PrunePolicy{Keep: []KeepRef{{Repo: "app", Tag: "r3"}}},
			[]string{"app:r1", "multi:v1", "app:r2"}, 1000 + 1 + 2 + 10 + 1 + 2 + 20 + 1 + 1 + 2 + 40, 0},
		{"keep by platform digest keeps the index", PrunePolicy{Keep: []KeepRef{{Repo: "multi", Digest: dg("5")}, {Repo: "app", Tag: "r9"}}},
			[]string{"app:r1", "app:r2", "app:r3"}, 1000 + 1 + 2 + 10 + 1 + 2 + 20 + 1 + 2 + 30 + 100, 1},
		{"unused for 30 days", PrunePolicy{UnusedFor: 30 * 24 * time.Hour},
			[]string{"app:r1", "multi:v1"}, 1000 + 1 + 2 + 10 + 1 + 1 + 2 + 40, 0},
		{"unused, kept list wins", PrunePolicy{UnusedFor: 30 * 24 * time.Hour, Keep: []KeepRef{{Repo: "app", Tag: "r1"}}},
			[]string{"multi:v1"}, 1000 + 1 + 1 + 2 + 40, 0},
		{"max size: least recently served first", PrunePolicy{MaxSize: 150},
			[]string{"app:r1", "multi:v1", "app:r2"}, 1000 + 13 + 44 + 23, 0},
		{"max size already met by garbage", PrunePolicy{MaxSize: 300}, nil, 1000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := makePlan(testInventory(t0), tc.pol, get, now)
			if got := names(p); !slices.Equal(got, tc.want) {
				t.Errorf("deleted %v, want %v", got, tc.want)
			}
			if p.BytesFreed != tc.freed {
				t.Errorf("freed %d, want %d", p.BytesFreed, tc.freed)
			}
			if len(p.KeepNotCached) != tc.notCached {
				t.Errorf("not cached %v", p.KeepNotCached)
			}
			if p.BytesAfter != p.BytesBefore-p.BytesFreed || p.ImagesAfter != 4-len(tc.want) {
				t.Errorf("after: %+v", p)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"0", 0, false}, {"1000", 1000, false}, {"40MiB", 40 << 20, false}, {"40M", 40 << 20, false},
		{"40MB", 40 << 20, false}, {"1.5G", 3 << 29, false}, {"2T", 2 << 40, false}, {"500g", 500 << 30, false},
		{"", 0, true}, {"-1", 0, true}, {"10X", 0, true}, {"lots", 0, true}, {"0.1", 0, true}, {"1e30T", 0, true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, bad %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestParseEligible(t *testing.T) {
	out := "app\napp: marking manifest sha256:" + strings.Repeat("1", 64) + " \n\n3 blobs marked, 2 blobs and 0 manifests eligible for deletion\n" +
		"blob eligible for deletion: " + dg("9") + "\nblob eligible for deletion: sha256:bad\n"
	if got := parseEligible([]byte(out)); !slices.Equal(got, []string{dg("9")}) {
		t.Errorf("parseEligible = %v", got)
	}
}

// removeBlob never deletes a blob being served, downloaded or stored, nor
// one served since the prune began; others leave the storage whole.
func TestRemoveBlobSparesWhatIsInUse(t *testing.T) {
	root := t.TempDir()
	s := &Server{
		store:   storage{root: root},
		flights: &flights{m: map[string]*flight{}, holders: map[string]string{}},
		served:  newServedLog(root + "/served.json"),
	}
	start := time.Now()
	cutoff := start.Add(-time.Millisecond)
	for _, c := range "12345" {
		d := dg(string(c))
		if err := os.MkdirAll(filepath.Dir(s.store.dataPath(d)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.store.dataPath(d), []byte("blob "+string(c)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.inUse.begin(dg("1"))                          // being served
	s.flights.m[dg("2")] = &flight{}                // being downloaded or stored
	s.served.touch(dg("3"), start.Add(time.Second)) // served since the prune began
	s.served.touch(dg("4"), start.Add(-time.Hour))  // served before: may go
	trash := t.TempDir()
	for _, tc := range []struct {
		c    string
		gone bool
	}{{"1", false}, {"2", false}, {"3", false}, {"4", true}, {"5", true}} {
		size, ok, err := s.removeBlob(dg(tc.c), cutoff, trash)
		if err != nil || ok != tc.gone || (ok && size != 6) {
			t.Errorf("blob %s: removed %v (%d bytes), %v; want removed %v", tc.c, ok, size, err, tc.gone)
		}
		if s.store.hasData(dg(tc.c)) == tc.gone {
			t.Errorf("blob %s: data present %v after removeBlob", tc.c, !tc.gone)
		}
	}
	s.inUse.end(dg("1"))
	if _, ok, _ := s.removeBlob(dg("1"), cutoff, trash); !ok {
		t.Errorf("blob 1 is kept once its request ended")
	}
}

// The last-served record survives a restart; a damaged one starts afresh.
func TestServedLogPersists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "served.json")
	l := newServedLog(p)
	at := time.UnixMilli(1_800_000_000_123)
	l.touch(dg("a"), at)
	l.touch(dg("a"), at.Add(-time.Hour)) // older: ignored
	l.touch("not-a-digest", at)
	if err := l.save(); err != nil {
		t.Fatal(err)
	}
	again := newServedLog(p)
	if err := again.load(); err != nil || !again.get(dg("a")).Equal(at) || len(again.t) != 1 {
		t.Errorf("reloaded %v, %v", again.t, err)
	}
	os.WriteFile(p, []byte("{half"), 0o600)
	if err := newServedLog(p).load(); err == nil {
		t.Errorf("a damaged record loads without a word")
	}
}

// A full disk stays full until the refused blob's room is free, whatever
// smaller blobs are stored meanwhile; other failures clear at the next store.
func TestStoreStateDiskFull(t *testing.T) {
	var st storeState
	now := time.Now()
	st.failed(&noSpaceError{digest: dg("b"), size: 100, free: 50}, 200, now)
	st.stored(150)
	if _, _, full, _ := st.snapshot(); !full {
		t.Errorf("a small store cleared the disk-full state")
	}
	st.stored(250)
	if msg, _, full, _ := st.snapshot(); full || msg != "" {
		t.Errorf("room came back but the state stays: %q %v", msg, full)
	}
	st.failed(os.ErrPermission, 0, now)
	if msg, since, full, _ := st.snapshot(); full || msg == "" || !since.Equal(now) {
		t.Errorf("another failure: %q %v %v", msg, since, full)
	}
	st.stored(0)
	if msg, _, _, _ := st.snapshot(); msg != "" {
		t.Errorf("a store did not clear the failure")
	}
}
