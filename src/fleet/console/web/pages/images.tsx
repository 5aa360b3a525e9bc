/** Images in the fleet: platforms, sizes, who runs them; upload an archive with progress; delete. */
import { useState } from 'preact/hooks';
import type { Page as ApiPage, Device, Image } from '../../../api/schemas.js';
import { call, seg, upload } from '../api.js';
import { href } from '../router.js';
import {
  act,
  bytes,
  ConfirmButton,
  can,
  errorText,
  Page,
  Show,
  Table,
  useLive,
  useResource,
  useSession,
  When,
} from '../ui.js';

export function ImagesPage() {
  const session = useSession();
  const images = useResource(async (signal) => {
    const list = await call<{ items: Image[] }>('GET', '/images', { signal });
    // how many devices report running each image (one count query per image name)
    const users = await Promise.all(
      list.items.map((i) =>
        call<ApiPage<Device>>('GET', '/devices', { query: { image: i.name, limit: 1 }, signal }).then(
          (p) => p.total ?? p.items.length,
          () => null,
        ),
      ),
    );
    return list.items.map((image, n) => ({ image, users: users[n] ?? null }));
  }, []);
  useLive((e) => e.type === 'deployment' || e.type === 'device.state', images.reload, 5000);
  return (
    <Page title="Images">
      {can(session, 'operator') && <Upload onDone={images.reload} />}
      <Show
        r={images}
        what="images"
        isEmpty={(l) => l.length === 0}
        empty="No image in the fleet yet: upload an oci-archive or docker-archive, or berth fleet push."
      >
        {(list) => (
          <Table
            class="images"
            rows={list}
            rowKey={({ image }) => image.name}
            columns={[
              { header: 'Image', cell: ({ image: i }) => <code>{i.name}</code> },
              { header: 'Platforms', cell: ({ image: i }) => i.platforms.join(', ') || '—' },
              {
                header: 'Size',
                class: 'num',
                title: ({ image: i }) => `${i.totalSize} bytes with every platform`,
                cell: ({ image: i }) => bytes(i.totalSize),
              },
              {
                header: 'Digest',
                cell: ({ image: i }) => <code title={i.digest}>{i.digest.slice(0, 19)}…</code>,
              },
              { header: 'Pushed', cell: ({ image: i }) => <When at={i.pushedAt} /> },
              {
                header: 'Devices running it',
                class: 'num',
                cell: ({ image: i, users }) =>
                  users === null ? (
                    '—'
                  ) : users === 0 ? (
                    '0'
                  ) : (
                    <a href={href(['devices'], { image: i.name })}>{users}</a>
                  ),
              },
              can(session, 'operator') && {
                header: 'Actions',
                hiddenHeader: true,
                cell: ({ image: i }) => (
                  <ConfirmButton
                    label="Delete"
                    question={`Delete ${i.name}? Refused while a deployment uses it.`}
                    danger
                    onConfirm={() =>
                      act(`${i.name} deleted`, () => call('DELETE', `/images/${seg(i.name)}`)).then(
                        images.reload,
                      )
                    }
                  />
                ),
              },
            ]}
          />
        )}
      </Show>
    </Page>
  );
}

function Upload({ onDone }: { onDone: () => void }) {
  const [file, setFile] = useState<File | undefined>();
  const [tag, setTag] = useState('');
  const [progress, setProgress] = useState<{ sent: number; total: number } | undefined>();
  const [error, setError] = useState<string | undefined>();
  return (
    <form
      class="card upload inline-form"
      aria-labelledby="upload-title"
      onSubmit={async (e) => {
        e.preventDefault();
        if (!file) return;
        setError(undefined);
        setProgress({ sent: 0, total: file.size });
        try {
          await upload('/images', { tag }, file, 'application/octet-stream', (sent, total) =>
            setProgress({ sent, total }),
          );
          await act(`${tag} uploaded`, async () => undefined);
          setFile(undefined);
          setTag('');
          onDone();
        } catch (err) {
          setError(errorText(err));
        } finally {
          setProgress(undefined);
        }
      }}
    >
      <h2 id="upload-title">Upload an image</h2>
      <label>
        Archive (oci-archive or docker-archive, .tar or .tar.gz)
        <input
          type="file"
          accept=".tar,.tgz,.gz,application/x-tar,application/gzip"
          onChange={(e) => setFile((e.target as HTMLInputElement).files?.[0])}
        />
      </label>
      <label>
        Name and tag
        <input
          value={tag}
          placeholder="app:1.0"
          required
          pattern="[a-z0-9][a-z0-9._/:-]*"
          onInput={(e) => setTag((e.target as HTMLInputElement).value.trim())}
        />
      </label>
      <button type="submit" class="primary" disabled={!file || !tag || progress !== undefined}>
        Upload
      </button>
      {progress && (
        <p>
          <progress value={progress.sent} max={Math.max(1, progress.total)} aria-label="upload progress" />{' '}
          {bytes(progress.sent)} of {bytes(progress.total)}
        </p>
      )}
      {error && (
        <p class="state state-error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}
