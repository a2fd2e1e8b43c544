package registrytest

import (
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestRelay(t *testing.T) {
	reg := Start(t)
	img, err := Image(1, 200<<10, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push("lib/a:1", img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	relay := StartRelay(t, reg.URL)
	blobURL := relay.URL + "/v2/lib/a/blobs/" + d.String()

	get := func() ([]byte, error) {
		resp, err := http.Get(blobURL)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}

	body, err := get()
	if err != nil || digest.FromBytes(body).String() != d.String() {
		t.Fatalf("plain get: %v, %d bytes", err, len(body))
	}
	if relay.BlobGets(d.String()) != 1 || relay.BlobBytes("") != size {
		t.Errorf("counted %d gets, %d bytes; want 1, %d", relay.BlobGets(d.String()), relay.BlobBytes(""), size)
	}

	relay.CutAfter("", 1000, 1)
	if body, err := get(); err == nil {
		t.Fatalf("cut: read %d bytes without error", len(body))
	}
	if log := relay.Log(); !log[len(log)-1].Cut || log[len(log)-1].Bytes != 1000 {
		t.Errorf("cut not recorded: %+v", log[len(log)-1])
	}
	if _, err := get(); err != nil {
		t.Fatalf("the cut applies once: %v", err)
	}

	relay.Corrupt(d.String(), true)
	if body, err := get(); err != nil || int64(len(body)) != size || digest.FromBytes(body).String() == d.String() {
		t.Fatalf("corrupt: %v, %d bytes, digest %s", err, len(body), digest.FromBytes(body))
	}
	relay.Corrupt(d.String(), false)

	relay.SetHeaderDelay(300 * time.Millisecond)
	if _, err := get(); err != nil {
		t.Fatal(err)
	}
	// End is recorded when the handler returns, just after the client has the last byte.
	last := relay.Log()[len(relay.Log())-1]
	for deadline := time.Now().Add(5 * time.Second); last.End.IsZero() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		last = relay.Log()[len(relay.Log())-1]
	}
	if last.Headers.IsZero() || last.End.Sub(last.Headers) < 300*time.Millisecond {
		t.Errorf("header delay not applied: %+v", last)
	}
	relay.SetHeaderDelay(0)

	relay.Down()
	if _, err := get(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("down: err = %v, want connection refused", err)
	}
	if err := relay.Up(); err != nil {
		t.Fatal(err)
	}
	if body, err := get(); err != nil || digest.FromBytes(body).String() != d.String() {
		t.Fatalf("up again: %v", err)
	}
}

// A token-auth upstream behind the relay hands out its token through the relay.
func TestRelayTokenAuth(t *testing.T) {
	reg := Start(t, WithTokenAuth("u", "p"))
	relay := StartRelay(t, reg.URL)
	resp, err := http.Get(relay.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("WWW-Authenticate"), `Bearer realm="`+relay.URL+`/token",service="registrytest"`; got != want {
		t.Errorf("challenge %q, want %q", got, want)
	}
}

// The black hole accepts, reads and never answers, also on a connection
// already open and mid-body, until lifted; the lies send more than the blob.
func TestRelayBlackHoleAndLies(t *testing.T) {
	reg := Start(t)
	img, _ := Image(1, 400<<10, "amd64")
	if _, err := reg.Push("lib/h:1", img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	relay := StartRelay(t, reg.URL)
	blobURL := relay.URL + "/v2/lib/h/blobs/" + d.String()
	client := &http.Client{Timeout: 500 * time.Millisecond}

	// Mid-body: the open response stops sending.
	relay.SetRate(100 << 10)
	resp, err := http.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	relay.BlackHole(true)
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	// New requests, on new and on kept-alive connections, get no headers.
	for range 2 {
		if r, err := client.Get(blobURL); err == nil {
			r.Body.Close()
			t.Fatalf("an answer from a black hole: %s", r.Status)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the open body ended in a black hole: %v", err)
	default:
	}
	relay.BlackHole(false)
	if err := <-done; err != nil {
		t.Fatalf("the open body after the hole lifted: %v", err)
	}
	resp.Body.Close()
	relay.SetRate(0)

	relay.LieAbout(d.String(), BodyOversize)
	r, err := http.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.ContentLength != size+1<<20 || int64(len(body)) != size+1<<20 {
		t.Errorf("oversize: Content-Length %d, %d bytes; want %d", r.ContentLength, len(body), size+1<<20)
	}
	relay.LieAbout(d.String(), BodyEndless)
	r, err = http.Get(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 8<<20))
	r.Body.Close()
	if r.ContentLength != -1 || n != 8<<20 {
		t.Errorf("endless: Content-Length %d, read %d bytes", r.ContentLength, n)
	}
}
