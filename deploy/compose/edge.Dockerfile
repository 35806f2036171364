# The public edge: nginx serving the web app (web/, built here into
# web/dist) at / and proxying /api, /ws and /socket.io/ (nginx.conf, mounted
# by docker-compose.yml). Built from the repository root.
FROM node:22-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM nginx:1.28-bookworm
# curl is the container health check's client (GET /health).
RUN command -v curl >/dev/null || { apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*; }
COPY --from=web /src/web/dist /usr/share/nginx/html
