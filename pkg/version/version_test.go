package version

import "testing"

func TestGet(t *testing.T) {
	i := Get("kubectl-bkcache")
	if i.Plugin != "kubectl-bkcache" || i.Version != Version || i.String() != "kubectl-bkcache "+Version {
		t.Errorf("Get = %+v, String %q", i, i.String())
	}
}
