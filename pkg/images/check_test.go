package images

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCheck(t *testing.T) {
	refs := []string{"docker.io/library/nginx:1.25", "hub.bktencent.com/blueking/bk-paas:1.2.3", "quay.io/x/y@sha256:" + strings.Repeat("0", 64), "hub.bktencent.com/blueking/down:1"}
	var asked atomic.Int32
	head := func(_ context.Context, ref string) (bool, error) {
		asked.Add(1)
		switch ref {
		case "10.0.0.1:5500/library/nginx:1.25":
			return true, nil
		case "10.0.0.1:5500/blueking/down:1":
			return false, errors.New("connection refused")
		}
		return false, nil
	}
	res := Check(context.Background(), refs, "10.0.0.1:5500", 2, head)
	if asked.Load() != 4 || len(res) != 4 {
		t.Fatalf("asked %d, %d results", asked.Load(), len(res))
	}
	if res[0].Missing || !res[1].Missing || !res[2].Missing || res[3].Missing || res[3].Err == nil {
		t.Errorf("results = %+v", res)
	}
	if res[2].Target != "10.0.0.1:5500/x/y@sha256:"+strings.Repeat("0", 64) || res[1].Reference != refs[1] {
		t.Errorf("targets = %+v", res)
	}
	err := CheckSummary("10.0.0.1:5500", res)
	var ce *CheckError
	if !errors.As(err, &ce) || len(ce.Missing) != 2 || len(ce.Failed) != 1 {
		t.Fatalf("summary = %v", err)
	}
	for _, want := range []string{"2 of 4 images missing from 10.0.0.1:5500, 1 could not be checked", "missing 10.0.0.1:5500/blueking/bk-paas:1.2.3", "unknown 10.0.0.1:5500/blueking/down:1: connection refused", "docker login"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("summary lacks %q:\n%v", want, err)
		}
	}
	if err := CheckSummary("r", res[:1]); err != nil {
		t.Errorf("all present: %v", err)
	}
}
