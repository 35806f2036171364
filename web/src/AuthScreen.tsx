import { useId, useState, type FormEvent } from 'react';
import { RelayError, type RelayClient } from 'relay-client';

type Mode = 'signin' | 'signup';

export function AuthScreen({ client }: { client: RelayClient }) {
  const [mode, setMode] = useState<Mode>('signin');
  const [username, setUsername] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const id = useId();

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      if (mode === 'signup') await client.signUp({ username, email, password });
      else await client.signIn(username, password);
    } catch (err) {
      setError(err instanceof RelayError ? err.message : 'Something went wrong; try again.');
      setBusy(false);
    }
  }

  const tab = (m: Mode, label: string) => (
    <button
      type="button"
      role="tab"
      id={`${id}-${m}`}
      aria-selected={mode === m}
      aria-controls={`${id}-panel`}
      tabIndex={mode === m ? 0 : -1}
      onClick={() => {
        setMode(m);
        setError('');
      }}
      onKeyDown={(e) => {
        if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
          const next: Mode = m === 'signin' ? 'signup' : 'signin';
          setMode(next);
          document.getElementById(`${id}-${next}`)?.focus();
        }
      }}
    >
      {label}
    </button>
  );

  return (
    <main className="auth">
      <h1>Relay</h1>
      <div role="tablist" aria-label="Account">
        {tab('signin', 'Sign in')}
        {tab('signup', 'Sign up')}
      </div>
      <form id={`${id}-panel`} role="tabpanel" aria-labelledby={`${id}-${mode}`} onSubmit={submit}>
        <label>
          Username
          <input
            name="username"
            autoComplete="username"
            required
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            {...(mode === 'signup' ? { pattern: '[A-Za-z0-9_.\\-]{3,32}', title: '3 to 32 letters, digits, _ . or -' } : {})}
          />
        </label>
        {mode === 'signup' && (
          <label>
            Email
            <input name="email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} />
          </label>
        )}
        <label>
          Password
          <input
            name="password"
            type="password"
            autoComplete={mode === 'signup' ? 'new-password' : 'current-password'}
            required
            minLength={mode === 'signup' ? 8 : undefined}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {mode === 'signup' ? 'Sign up' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
