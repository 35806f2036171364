// Creates the users and rooms of the Artillery scenario through the api and
// writes their tokens as a CSV payload (token,roomId per line).
//
//   node setup.mjs --api http://127.0.0.1:8080 --out users.csv [--users 50] [--room-size 10]
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    api: { type: 'string', default: process.env.RELAY_API_URL || 'http://127.0.0.1:8080' },
    out: { type: 'string', default: 'users.csv' },
    users: { type: 'string', default: '50' },
    'room-size': { type: 'string', default: '10' },
  },
});
const users = Number(values.users);
const roomSize = Number(values['room-size']);
if (!(users > 0 && roomSize > 0)) throw new Error('--users and --room-size must be positive');

async function api(method, path, body, token) {
  const res = await fetch(values.api + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

const run = randomBytes(3).toString('hex');
const created = [];
// A few at a time: registration hashes passwords (bcrypt) on the api.
for (let i = 0; i < users; i += 8) {
  const batch = [];
  for (let j = i; j < Math.min(users, i + 8); j++) {
    const username = `load_${run}_${j}`;
    batch.push(api('POST', '/api/auth/register', { username, email: `${username}@example.test`, password: 'load test password' }));
  }
  for (const r of await Promise.all(batch)) created.push({ id: r.user.id, token: r.token });
}
const lines = ['token,roomId'];
for (let i = 0; i < created.length; i += roomSize) {
  const members = created.slice(i, i + roomSize);
  const [owner, ...rest] = members;
  const room = await api('POST', '/api/rooms', { name: `load-${run}-${i / roomSize}`, type: 'group', memberIds: rest.map((m) => m.id) }, owner.token);
  for (const m of members) lines.push(`${m.token},${room.id}`);
}
writeFileSync(values.out, lines.join('\n') + '\n');
console.log(`setup: ${created.length} users in ${Math.ceil(created.length / roomSize)} rooms written to ${values.out}`);
