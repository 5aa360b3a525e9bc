/**
 * The berth web console: a single-page app over the public fleet API (src/fleet/console/assets.ts serves
 * it). Everything is behind the login; the shell asks GET /session on load, keeps the CSRF token in memory,
 * opens one SSE stream for live updates, and offers only the actions the session's role may take (the API
 * refuses the others anyway).
 */
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { call, live, type SessionInfo, setCsrf, whenUnauthenticated } from './api.js';
import { AdminPage } from './pages/admin.js';
import { DeployPage } from './pages/deploy.js';
import { DevicePage } from './pages/device.js';
import { DevicesPage } from './pages/devices.js';
import { ImagesPage } from './pages/images.js';
import { LoginPage } from './pages/login.js';
import { OverviewPage } from './pages/overview.js';
import { RolloutPage, RolloutsPage } from './pages/rollouts.js';
import { href, type Route, useRoute } from './router.js';
import { can, errorText, Notices, SessionContext } from './ui.js';

type Boot = { state: 'loading' } | { state: 'out'; reason?: string } | { state: 'in'; session: SessionInfo };

function App() {
  const [boot, setBoot] = useState<Boot>({ state: 'loading' });
  const route = useRoute();

  useEffect(() => {
    whenUnauthenticated(() => {
      live.stop();
      setCsrf(null);
      setBoot({ state: 'out', reason: 'Your session ended: log in again.' });
    });
    call<SessionInfo>('GET', '/session').then(
      (s) => signedIn(s),
      (err) =>
        setBoot({
          state: 'out',
          ...(err?.status === 401 ? {} : { reason: `Cannot reach the fleet server: ${errorText(err)}` }),
        }),
    );
  }, []);

  function signedIn(s: SessionInfo) {
    setCsrf(s.csrfToken);
    live.start();
    setBoot({ state: 'in', session: s });
  }

  async function logout() {
    try {
      await call('DELETE', '/session');
    } catch {
      /* the session may be gone already */
    }
    live.stop();
    setCsrf(null);
    setBoot({ state: 'out', reason: 'Logged out.' });
  }

  if (boot.state === 'loading')
    return (
      <main class="boot" aria-busy="true">
        <p>Loading…</p>
      </main>
    );
  if (boot.state === 'out') return <LoginPage reason={boot.reason} onSignedIn={signedIn} />;
  const s = boot.session;
  return (
    <SessionContext.Provider value={s}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="#/">
          berth
        </a>
        <nav aria-label="Main">
          <NavLink route={route} to="" label="Overview" />
          <NavLink route={route} to="devices" label="Devices" />
          <NavLink route={route} to="images" label="Images" />
          {can(s, 'operator') && <NavLink route={route} to="deploy" label="Deploy" />}
          <NavLink route={route} to="rollouts" label="Rollouts" />
          <NavLink route={route} to="admin" label="Administration" />
        </nav>
        <div class="who">
          <LiveStatus />
          <span class="user" data-testid="user">
            {s.user} <span class={`role role-${s.role}`}>{s.role}</span>
          </span>
          <button type="button" onClick={logout}>
            Log out
          </button>
        </div>
      </header>
      <main id="main">
        <Pages route={route} />
      </main>
      <Notices />
    </SessionContext.Provider>
  );
}

function NavLink({ route, to, label }: { route: Route; to: string; label: string }) {
  const current = (route.parts[0] ?? '') === to;
  return (
    <a href={`#/${to}`} aria-current={current ? 'page' : undefined}>
      {label}
    </a>
  );
}

function LiveStatus() {
  const [s, setS] = useState(live.status);
  useEffect(() => live.onStatus(setS), []);
  const text = s === 'open' ? 'live' : s === 'connecting' ? 'reconnecting' : 'offline';
  return (
    <span class={`live live-${s}`} title={`live updates: ${text}`}>
      {text}
    </span>
  );
}

function Pages({ route }: { route: Route }) {
  const [a, b] = route.parts;
  switch (a) {
    case undefined:
      return <OverviewPage />;
    case 'devices':
      return b ? <DevicePage id={b} /> : <DevicesPage query={route.query} />;
    case 'images':
      return <ImagesPage />;
    case 'deploy':
      return <DeployPage query={route.query} />;
    case 'rollouts':
      return b ? <RolloutPage id={b} /> : <RolloutsPage query={route.query} />;
    case 'admin':
      return <AdminPage tab={b} />;
    default:
      return (
        <section class="page">
          <h1>Not found</h1>
          <p>
            No such page. <a href={href([])}>Back to the overview</a>.
          </p>
        </section>
      );
  }
}

const root = document.getElementById('app');
if (root) render(<App />, root);
