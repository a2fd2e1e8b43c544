package transfer

import (
	"errors"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func testHash(n int) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", n)}
}

func TestMeterCountsSharedBlobsOnceOverall(t *testing.T) {
	m := NewMeter()
	base, a, b := v1.Descriptor{Digest: testHash(1), Size: 100}, v1.Descriptor{Digest: testHash(2), Size: 10}, v1.Descriptor{Digest: testHash(3), Size: 20}
	m.Plan("img-a", []v1.Descriptor{base, a})
	m.Plan("img-b", []v1.Descriptor{base, b})
	m.Plan("img-b", []v1.Descriptor{base}) // planned twice: counted once
	s := m.Snapshot()
	if s.Total != 130 || s.Current != 0 || s.ImagesTotal != 2 || s.Images[1].Total != 120 {
		t.Fatalf("planned snapshot = %+v", s)
	}
	if !s.Images[0].Started.IsZero() {
		t.Errorf("an image started before any byte moved")
	}
	m.Writer(base.Digest).Write(make([]byte, 60))
	m.Add(base.Digest, 70) // past the size: capped
	m.Add(testHash(99), 5) // unknown blob: ignored
	s = m.Snapshot()
	if s.Current != 100 || s.Images[0].Current != 100 || s.Images[1].Current != 100 || s.Images[0].Started.IsZero() {
		t.Errorf("after the shared blob: %+v", s)
	}
	m.Complete(a.Digest)
	m.Finish("img-b", nil)
	m.Finish("img-c", errors.New("not found")) // never planned: still counted as failed
	s = m.Snapshot()
	if s.Current != 130 || s.ImagesDone != 2 || s.ImagesTotal != 3 || s.Images[0].Done || !s.Images[1].Done || !s.Images[2].Failed {
		t.Errorf("after finishing: %+v", s)
	}
	var nilMeter *Meter
	nilMeter.Plan("x", []v1.Descriptor{a})
	nilMeter.Add(a.Digest, 1)
	nilMeter.Finish("x", nil)
	if s := nilMeter.Snapshot(); s.ImagesTotal != 0 {
		t.Errorf("a nil meter kept something: %+v", s)
	}
	if n, err := nilMeter.Writer(a.Digest).Write([]byte("abc")); n != 3 || err != nil {
		t.Errorf("a nil meter's writer failed: %d %v", n, err)
	}
}
