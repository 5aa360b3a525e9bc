import { useState } from 'preact/hooks';
import { ApiError, call, type SessionInfo } from '../api.js';
import { errorText } from '../ui.js';

export function LoginPage({
  reason,
  onSignedIn,
}: {
  reason?: string | undefined;
  onSignedIn: (s: SessionInfo) => void;
}) {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      onSignedIn(await call<SessionInfo>('POST', '/session', { body: { name, password } }));
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 429
          ? `Too many failed logins: ${err.message}`
          : errorText(err),
      );
    } finally {
      setBusy(false);
      setPassword('');
    }
  }

  return (
    <main class="login" id="main">
      <form class="card login-card" onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">berth fleet console</h1>
        {reason && <p class="state">{reason}</p>}
        <label>
          User name
          <input
            name="username"
            autocomplete="username"
            required
            value={name}
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Password
          <input
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          />
        </label>
        {error && (
          <p class="state state-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <p class="hint">
          No user yet? On the server: <code>berth fleet user add NAME --role admin</code>, or the setup token{' '}
          <code>berth fleet serve</code> printed.
        </p>
      </form>
    </main>
  );
}
