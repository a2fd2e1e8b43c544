package containerd

import (
	"fmt"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// UnifiedDiff is a `diff -u` of one file; old nil means the file is new, new nil that it goes.
func UnifiedDiff(path string, old, new []byte) string {
	from, to := path, path
	if old == nil {
		from = "/dev/null"
	}
	if new == nil {
		to = "/dev/null"
	}
	s, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: splitLines(string(old)), B: splitLines(string(new)),
		FromFile: from, ToFile: to, Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("(no diff for %s: %v)\n", path, err)
	}
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}
