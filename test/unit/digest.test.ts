import test from 'ava';
import { chainIds, isDigest, parseDigest, sha256Digest } from '../../src/oci/digest.js';

test('sha256Digest matches the known digest of the empty string', (t) => {
  t.is(sha256Digest(''), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('parseDigest rejects other algorithms, upper case and path tricks', (t) => {
  for (const bad of ['sha512:abc', `sha256:${'A'.repeat(64)}`, `sha256:../../${'a'.repeat(58)}`, '', 42]) {
    t.false(isDigest(bad));
    t.throws(() => parseDigest(bad), { message: /invalid digest/ });
  }
});

test('chainIds follow the image-spec definition', (t) => {
  const a = sha256Digest('a');
  const b = sha256Digest('b');
  const c = sha256Digest('c');
  const ids = chainIds([a, b, c]);
  t.is(ids[0], a);
  t.is(ids[1], sha256Digest(`${a} ${b}`));
  t.is(ids[2], sha256Digest(`${ids[1]} ${c}`));
  t.deepEqual(chainIds([]), []);
});
