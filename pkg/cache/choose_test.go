package cache

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/pkg/transfer"
)

func TestChoose(t *testing.T) {
	c := func(name, upstream string, port int, bind string) Cache {
		return Cache{Spec: Spec{Name: name, Upstream: upstream, Port: port, Bind: bind}}
	}
	bkhub := c("bkhub", "https://hub.bktencent.com", 5500, "")
	nb1 := c("nb1", "https://hub.bktencent.com", 5600, "10.0.0.5")
	dockerio := c("dockerio", "https://registry-1.docker.io", 5501, "")
	tests := []struct {
		name    string
		caches  []Cache
		image   string
		want    string   // cache name, or "" for an error
		wantErr []string // parts of the error
	}{
		{"one cache, any name: used", []Cache{nb1}, "blueking/x:1", "nb1", nil},
		{"one cache, no image (logs, down)", []Cache{nb1}, "", "nb1", nil},
		{"several, no hint in the image", []Cache{bkhub, dockerio}, "blueking/x:1", "",
			[]string{"2 caches on this engine", "bkhub (https://hub.bktencent.com on 127.0.0.1:5500)", "dockerio (", "--cache NAME"}},
		{"several, no image", []Cache{bkhub, dockerio}, "", "", []string{"2 caches", "--cache NAME"}},
		{"the cache's loopback address", []Cache{bkhub, nb1, dockerio}, "127.0.0.1:5600/blueking/x:1", "nb1", nil},
		{"localhost works too", []Cache{bkhub, dockerio}, "localhost:5501/library/busybox:1", "dockerio", nil},
		{"the bind address", []Cache{bkhub, nb1}, "10.0.0.5:5600/blueking/x:1", "nb1", nil},
		{"the upstream, one cache proxies it", []Cache{bkhub, dockerio}, "hub.bktencent.com/blueking/x:1", "bkhub", nil},
		{"docker hub aliases", []Cache{bkhub, dockerio}, "docker.io/library/busybox:1", "dockerio", nil},
		{"the upstream, two caches proxy it", []Cache{bkhub, nb1, dockerio}, "hub.bktencent.com/blueking/x:1", "",
			[]string{"several caches proxy hub.bktencent.com", "bkhub (", "nb1 (", "--cache NAME"}},
		{"a registry no cache serves, one cache: used (verify then says why not)", []Cache{bkhub}, "quay.io/x/y:1", "bkhub", nil},
		{"an address of no cache, several", []Cache{bkhub, dockerio}, "127.0.0.1:9999/x:1", "", []string{"2 caches"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := choose(tt.caches, tt.image, "--cache NAME")
			if tt.want != "" {
				if err != nil || got.Spec.Name != tt.want {
					t.Fatalf("choose = %q, %v; want %q", got.Spec.Name, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("choose = %q, want an error", got.Spec.Name)
			}
			for _, part := range tt.wantErr {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q lacks %q", err, part)
				}
			}
		})
	}
}

func TestEngineDenied(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{errors.New("permission denied while trying to connect to the docker API at unix:///var/run/docker.sock"), true},
		{fmt.Errorf("dial: %w", os.ErrPermission), true},
		{errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"), false},
		{nil, false},
	} {
		if got := EngineDenied(tt.err); got != tt.want {
			t.Errorf("EngineDenied(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestFailedError(t *testing.T) {
	nf := transfer.ImageResult{Source: "a", NotFound: true}
	other := transfer.ImageResult{Source: "b", Error: "connection reset"}
	for _, tt := range []struct {
		failed      []transfer.ImageResult
		want, never string
	}{
		{nil, "", ""},
		{[]transfer.ImageResult{nf, nf}, "2 images were not found upstream (see above): check their names and tags", "again"},
		{[]transfer.ImageResult{nf, other}, "1 not found upstream (check their names and tags), 1 failed otherwise; run the same command again", ""},
		{[]transfer.ImageResult{other}, "1 images could not be warmed; run the same command again", "not found"},
	} {
		err := failedError(tt.failed, "")
		if tt.want == "" {
			if err != nil {
				t.Errorf("failedError(%v) = %v, want nil", tt.failed, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.never != "" && strings.Contains(err.Error(), tt.never)) {
			t.Errorf("failedError(%v) = %v, want %q without %q", tt.failed, err, tt.want, tt.never)
		}
	}
}
