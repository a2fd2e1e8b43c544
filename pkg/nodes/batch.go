package nodes

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// A node's file operations go in batches: a *Session runs a whole batch in one exec, because
// each exec into the node-access pod costs a container runtime exec on the node (tens of ms
// of CPU there and in the kubelet and API server), and those costs add up on every node.

// OpKind is one kind of file operation.
type OpKind string

const (
	OpRead   OpKind = "read"   // ReadFile
	OpWrite  OpKind = "write"  // WriteFile
	OpRemove OpKind = "remove" // Remove
	OpMkdir  OpKind = "mkdir"  // MkdirAll
	OpRmdir  OpKind = "rmdir"  // RemoveDirIfEmpty
	OpRename OpKind = "rename" // Rename
	// OpMissing reports which of a directory and its parents do not exist, outermost first:
	// what an OpMkdir of it would create.
	OpMissing OpKind = "missing"
)

// Op is one file operation on a node.
type Op struct {
	Kind OpKind
	Path string
	Data []byte // OpWrite
	To   string // OpRename
	// Expect, for an OpMkdir with Strict: the directories it must create, outermost first
	// (what an OpMissing read earlier). Creating others fails it: the node changed meanwhile.
	Expect []string
	Strict bool
}

// OpResult is what one operation found or did.
type OpResult struct {
	Data    []byte   // OpRead: the file's bytes (nil when missing)
	Exists  bool     // OpRead
	Created []string // OpMkdir: the directories it created, outermost first; OpMissing: would create
	Removed bool     // OpRmdir
}

// BatchError is a batch that stopped at its operation Index: the ones before it ran, it
// failed (Err says why, as the Node method would), the ones after it did not run, unless
// InDoubt: the link to the node broke, so it and the ones after it may have run.
type BatchError struct {
	Index   int
	InDoubt bool
	Err     error
}

func (e *BatchError) Error() string { return e.Err.Error() }
func (e *BatchError) Unwrap() error { return e.Err }

// batchCause is the error of the operation that stopped a batch.
func batchCause(err error) error {
	var be *BatchError
	if errors.As(err, &be) {
		return be.Err
	}
	return err
}

// batcher is a Node that runs several operations in one round trip.
type batcher interface {
	Batch(ctx context.Context, ops []Op) ([]OpResult, error)
}

// runOps runs ops on n in order and stops at the first that fails: then the error is a
// *BatchError and the results hold one entry per operation up to the failed one (its entry
// says what it did before failing, e.g. the directories a MkdirAll created). Nodes that
// cannot batch run the operations one by one through their methods.
func runOps(ctx context.Context, n Node, ops []Op) ([]OpResult, error) {
	if b, ok := n.(batcher); ok {
		return b.Batch(ctx, ops)
	}
	res := make([]OpResult, 0, len(ops))
	for i, op := range ops {
		r, err := runOp(ctx, n, op)
		res = append(res, r)
		if err != nil {
			return res, &BatchError{Index: i, Err: err}
		}
	}
	return res, nil
}

func runOp(ctx context.Context, n Node, op Op) (OpResult, error) {
	var r OpResult
	var err error
	switch op.Kind {
	case OpRead:
		r.Data, r.Exists, err = n.ReadFile(ctx, op.Path)
	case OpWrite:
		err = n.WriteFile(ctx, op.Path, op.Data)
	case OpRemove:
		err = n.Remove(ctx, op.Path)
	case OpMkdir:
		r.Created, err = n.MkdirAll(ctx, op.Path)
		if err == nil && op.Strict && !slices.Equal(r.Created, op.Expect) {
			err = changedDirs(n.Name(), op)
		}
	case OpMissing:
		m, ok := n.(interface {
			Missing(ctx context.Context, dir string) ([]string, error)
		})
		if !ok {
			return r, fmt.Errorf("node %s: cannot tell which directories exist", n.Name())
		}
		r.Created, err = m.Missing(ctx, op.Path)
	case OpRmdir:
		r.Removed, err = n.RemoveDirIfEmpty(ctx, op.Path)
	case OpRename:
		err = n.Rename(ctx, op.Path, op.To)
	default:
		err = fmt.Errorf("internal error: unknown file operation %q", op.Kind)
	}
	return r, err
}

// runEach runs ops like runOps but goes on after a failure; it returns each operation's
// result and error (nil when it worked): for reads and tidying up, where one failure must not
// stop the rest.
func runEach(ctx context.Context, n Node, ops []Op) ([]OpResult, []error) {
	res, errs := make([]OpResult, len(ops)), make([]error, len(ops))
	for start := 0; start < len(ops); {
		got, err := runOps(ctx, n, ops[start:])
		copy(res[start:], got)
		if err == nil {
			break
		}
		var be *BatchError
		if !errors.As(err, &be) {
			errs[start] = err
			break
		}
		errs[start+be.Index] = be.Err
		start += be.Index + 1
	}
	return res, errs
}

// changedDirs is a strict OpMkdir that found other directories missing than read before.
func changedDirs(node string, op Op) error {
	return fmt.Errorf("node %s: mkdir %s: the directories missing are not the ones read before (%q): the node changed during the run; run again", node, op.Path, op.Expect)
}

// batchScript runs its arguments, four per operation (kind, and three operands), in order.
// Before each operation it writes "#i" to stderr and after it "#i CODE" on a line of its own
// to stdout (no output of an operation starts with '#': base64, hex digests, absolute paths,
// "-", "removed"); the first non-zero code ends the script with that code. Each operation
// runs in a subshell, so its exit and set -e stay its own.
const batchScript = `op_read() {
[ -L "$1" ] && exit 6
if [ ! -e "$1" ]; then chroot /host test -e "$2" 2>/dev/null && exit 7; echo -; exit 0; fi
[ -f "$1" ] || exit 4
set -e; sha256sum "$1" | cut -d' ' -f1; base64 "$1"
}
op_write() {
set -e
[ ! -L "$1" ] || { echo "$1 is a symlink" >&2; exit 6; }
t="$1.bkcache-tmp"
printf '%s' "$2" | base64 -d > "$t"
if [ -e "$1" ]; then chmod "$(stat -c %a "$1")" "$t"; else chmod 0644 "$t"; fi
got=$(sha256sum "$t" | cut -d' ' -f1)
if [ "$got" != "$3" ]; then rm -f "$t"; echo "temp file digest $got != $3" >&2; exit 9; fi
sync "$t" 2>/dev/null || sync
mv -f "$t" "$1"
got=$(sha256sum "$1" | cut -d' ' -f1)
echo "$got"
[ "$got" = "$3" ] || { echo "read back sha256 $got, want $3" >&2; exit 10; }
}
op_mkdir() {
created=$(printf '%s\n' "$1" | while IFS= read -r d; do
	if [ ! -e "/host$d" ]; then mkdir -m 0755 "/host$d" || exit 1; echo "$d"
	elif [ ! -d "/host$d" ]; then echo "$d is not a directory" >&2; exit 3; fi
done)
c=$?
[ -z "$created" ] || printf '%s\n' "$created"
[ "$c" = 0 ] || exit "$c"
case $2 in +*) [ "+$created" = "$2" ] || exit 11 ;; esac
}
op_missing() {
printf '%s\n' "$1" | while IFS= read -r d; do
	if [ ! -e "/host$d" ]; then echo "$d"
	elif [ ! -d "/host$d" ]; then echo "$d is not a directory" >&2; exit 3; fi
done
}
op_rmdir() { [ -d "$1" ] || exit 0; rmdir "$1" 2>/dev/null && echo removed; exit 0; }
i=0
while [ $# -ge 4 ]; do
	echo "#$i" >&2
	case $1 in
	read) (op_read "$2" "$3") ;;
	write) (op_write "$2" "$3" "$4") ;;
	remove) rm -f "$2" ;;
	mkdir) (op_mkdir "$2" "$3") ;;
	missing) (op_missing "$2") ;;
	rmdir) (op_rmdir "$2") ;;
	rename) mv "$2" "$3" ;;
	*) echo "unknown operation $1" >&2; (exit 2) ;;
	esac
	c=$?
	printf '\n#%d %d\n' "$i" "$c"
	[ "$c" = 0 ] || exit "$c"
	i=$((i+1))
	shift 4
done`

// maxBatch bounds the arguments of one batch exec (they travel in the exec request's URL,
// which the API server and the kubelet cap at 1 MiB of headers); a longer batch is split.
const maxBatch = 256 << 10

// opArgs are an operation's four script arguments (paths as the pod sees the host's).
func opArgs(op Op) ([4]string, error) {
	if err := CheckPath(op.Path); err != nil {
		return [4]string{}, err
	}
	a := [4]string{string(op.Kind), hostMount + op.Path}
	switch op.Kind {
	case OpRead:
		a[2] = op.Path
	case OpWrite:
		a[2], a[3] = base64.StdEncoding.EncodeToString(op.Data), sum(op.Data)
		if len(a[2]) > maxArg {
			return a, fmt.Errorf("%s: %d bytes is too large to send through exec", op.Path, len(op.Data))
		}
	case OpRename:
		if err := CheckPath(op.To); err != nil {
			return a, err
		}
		a[2] = hostMount + op.To
	case OpMkdir, OpMissing:
		// The directory and its parents, outermost first; each created (missing) one is printed.
		var dirs []string
		for d := op.Path; d != "/"; d = path.Dir(d) {
			dirs = append([]string{d}, dirs...)
		}
		a[1] = strings.Join(dirs, "\n")
		if op.Strict {
			a[2] = "+" + strings.Join(op.Expect, "\n")
		}
	case OpRemove, OpRmdir:
	default:
		return a, fmt.Errorf("internal error: unknown file operation %q", op.Kind)
	}
	return a, nil
}

// Batch runs ops in order in as few execs as their size allows (one, for the files mirror
// writes), stopping at the first that fails; see runOps.
func (s *Session) Batch(ctx context.Context, ops []Op) ([]OpResult, error) {
	res := make([]OpResult, 0, len(ops))
	for start := 0; start < len(ops); {
		var args []string
		size, end := 0, start
		var argErr error
		for ; end < len(ops); end++ {
			a, err := opArgs(ops[end])
			if err != nil {
				argErr = fmt.Errorf("node %s: %w", s.Node, err)
				break
			}
			n := len(a[0]) + len(a[1]) + len(a[2]) + len(a[3])
			if end > start && size+n > maxBatch {
				break
			}
			size += n
			args = append(args, a[:]...)
		}
		if end > start {
			got, err := s.batch(ctx, ops[start:end], args)
			res = append(res, got...)
			if err != nil {
				var be *BatchError
				if errors.As(err, &be) {
					be.Index += start
				}
				return res, err
			}
		}
		if argErr != nil {
			return append(res, OpResult{}), &BatchError{Index: end, Err: argErr}
		}
		start = end
	}
	return res, nil
}

// batch runs one exec of batchScript and reads back each operation's result.
func (s *Session) batch(ctx context.Context, ops []Op, args []string) ([]OpResult, error) {
	stdout, stderr, err := s.exec(ctx, append([]string{"sh", "-c", batchScript, "bkcache"}, args...))
	outs, codes := splitBatchOutput(stdout)
	var res []OpResult
	for i, code := range codes {
		if i >= len(ops) {
			break
		}
		r, perr := s.parseResult(ops[i], outs[i])
		res = append(res, r)
		if code != 0 {
			ee := &ExitError{Code: code, Stderr: stderrOf(stderr, i)}
			return res, &BatchError{Index: i, Err: s.opError(ops[i], ee)}
		}
		if perr != nil {
			return res, &BatchError{Index: i, InDoubt: i < len(ops)-1, Err: perr}
		}
	}
	done := len(res)
	switch {
	case err != nil:
		// The exec itself broke (or ended without its report): the operation under way, and
		// the ones after it, may or may not have run.
		var ee *ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("node %s: file operations ended early: %w", s.Node, err)
		}
		return append(res, OpResult{}), &BatchError{Index: done, InDoubt: true, Err: s.opError(ops[done], err)}
	case done < len(ops):
		err = fmt.Errorf("node %s: exec in pod %s/%s: the node reported %d of %d file operations; run again", s.Node, s.a.Namespace, s.Pod, done, len(ops))
		return append(res, OpResult{}), &BatchError{Index: done, InDoubt: true, Err: err}
	}
	return res, nil
}

// splitBatchOutput cuts batchScript's stdout at its "#i CODE" lines: each operation's output
// and exit code, in order.
func splitBatchOutput(out []byte) ([]string, []int) {
	var outs []string
	var codes []int
	var cur strings.Builder
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if code, ok := marker(line, len(codes)); ok {
			outs, codes = append(outs, cur.String()), append(codes, code)
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return outs, codes
}

// marker reads operation want's "#i CODE" line.
func marker(line string, want int) (int, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "#")
	if !ok {
		return 0, false
	}
	is, cs, ok := strings.Cut(rest, " ")
	i, err1 := strconv.Atoi(is)
	c, err2 := strconv.Atoi(cs)
	if !ok || err1 != nil || err2 != nil || i != want {
		return 0, false
	}
	return c, true
}

// stderrOf is what operation i wrote to stderr: after its "#i" line.
func stderrOf(stderr []byte, i int) string {
	s := string(stderr)
	m := fmt.Sprintf("#%d\n", i)
	if j := strings.LastIndex(s, m); j >= 0 && (j == 0 || s[j-1] == '\n') {
		return s[j+len(m):]
	}
	return s
}

// parseResult reads an operation's output; an error means it ran but its output does not
// hold up (a read that changed while read, a write read back wrong).
func (s *Session) parseResult(op Op, out string) (OpResult, error) {
	var r OpResult
	switch op.Kind {
	case OpRead:
		digest, body, _ := strings.Cut(strings.TrimLeft(out, "\n"), "\n")
		if strings.TrimSpace(digest) == "-" {
			return r, nil
		}
		data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
		if err != nil {
			return r, fmt.Errorf("node %s: read %s: bad base64 from the node: %w", s.Node, op.Path, err)
		}
		if strings.TrimSpace(digest) != sum(data) {
			return r, fmt.Errorf("node %s: read %s: content does not match its sha256 on the node (changing while read?); run again", s.Node, op.Path)
		}
		r.Data, r.Exists = data, true
	case OpWrite:
		if got, want := strings.TrimSpace(out), sum(op.Data); got != want {
			return r, fmt.Errorf("node %s: write %s: read back sha256 %s, want %s; the file may be damaged: check it or run --revert", s.Node, op.Path, got, want)
		}
	case OpMkdir, OpMissing:
		r.Created = lines([]byte(out))
	case OpRmdir:
		r.Removed = strings.TrimSpace(out) == "removed"
	}
	return r, nil
}

// opError says which operation failed on which file, and for reads what the exit code means.
func (s *Session) opError(op Op, err error) error {
	var ee *ExitError
	switch op.Kind {
	case OpRead:
		if !errors.As(err, &ee) {
			return err
		}
		switch ee.Code {
		case 4:
			return fmt.Errorf("node %s: %s is not a regular file", s.Node, op.Path)
		case 6, 7:
			return fmt.Errorf("node %s: %s is reached through a symlink; give the real path (readlink -f on the node), e.g. with --containerd-config", s.Node, op.Path)
		}
		return fmt.Errorf("node %s: read %s: %w", s.Node, op.Path, err)
	case OpWrite:
		if errors.As(err, &ee) && ee.Code == 10 {
			return fmt.Errorf("node %s: write %s: %w; the file may be damaged: check it or run --revert", s.Node, op.Path, err)
		}
		return fmt.Errorf("node %s: write %s: %w", s.Node, op.Path, err)
	case OpRemove:
		return fmt.Errorf("node %s: remove %s: %w", s.Node, op.Path, err)
	case OpMkdir:
		if errors.As(err, &ee) && ee.Code == 11 {
			return changedDirs(s.Node, op)
		}
		return fmt.Errorf("node %s: mkdir %s: %w", s.Node, op.Path, err)
	case OpMissing:
		return fmt.Errorf("node %s: look for directory %s: %w", s.Node, op.Path, err)
	case OpRmdir:
		return fmt.Errorf("node %s: rmdir %s: %w", s.Node, op.Path, err)
	case OpRename:
		return fmt.Errorf("node %s: rename %s: %w", s.Node, op.Path, err)
	}
	return err
}
