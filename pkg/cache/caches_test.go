package cache

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestParseCachesFile(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
		count             int
	}{
		{"two caches", "caches:\n- {name: bkhub, upstream: 'https://hub.bktencent.com', port: 5500}\n- {name: dockerio, upstream: 'https://registry-1.docker.io', port: 5501, credentials: /root/d.yaml}\n", "", 2},
		{"empty", "caches: []\n", "no cache", 0},
		{"missing port", "caches:\n- {name: a, upstream: 'https://x'}\n", "name, upstream and port", 0},
		{"duplicate name", "caches:\n- {name: a, upstream: 'https://x', port: 1}\n- {name: a, upstream: 'https://y', port: 2}\n", "twice", 0},
		{"duplicate port", "caches:\n- {name: a, upstream: 'https://x', port: 1}\n- {name: b, upstream: 'https://y', port: 1}\n", "port 1", 0},
		{"budget", "caches:\n- {name: a, upstream: 'https://x', port: 1, maxSize: 500G}\n", "", 1},
		{"bad budget", "caches:\n- {name: a, upstream: 'https://x', port: 1, maxSize: lots}\n", "maxSize", 0},
		{"typo is an error", "caches:\n- {name: a, upstream: 'https://x', prot: 1}\n", "prot", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCachesFile([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.count {
				t.Fatalf("got %v, %v; want %d caches", got, err, tc.count)
			}
		})
	}
}

func TestReadCredentials(t *testing.T) {
	dir := t.TempDir()
	ok := dir + "/ok.yaml"
	writeFile(t, ok, "username: bk\npassword: s3cret\n")
	u, p, err := ReadCredentials(context.Background(), ok)
	if err != nil || u != "bk" || p != "s3cret" {
		t.Errorf("ReadCredentials = %q, %q, %v", u, p, err)
	}
	open := dir + "/open.yaml"
	writeFile(t, open, "username: bk\npassword: s3cret\n")
	os.Chmod(open, 0o644)
	if _, _, err := ReadCredentials(context.Background(), open); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable credentials file was accepted: %v", err)
	}
	// The advice names the file a symlink points to: chmod on the link would change the target anyway.
	link := dir + "/link.yaml"
	os.Symlink(open, link)
	if _, _, err := ReadCredentials(context.Background(), link); err == nil || !strings.Contains(err.Error(), "chmod 600 "+open) || !strings.Contains(err.Error(), link+" links to it") {
		t.Errorf("a link to a world-readable file: %v; want advice naming the target", err)
	}
	half := dir + "/half.yaml"
	writeFile(t, half, "username: bk\n")
	if _, _, err := ReadCredentials(context.Background(), half); err == nil {
		t.Errorf("credentials without a password were accepted")
	}
}
