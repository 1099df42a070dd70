// Helper for scripts/azure-test.sh: talks to Azurite with the emulator's well-known account.
//   node blob.js mkcontainer NAME
//   node blob.js put CONTAINER PREFIX DIR      upload every file under DIR to PREFIX/<relative path>
//   node blob.js get CONTAINER PREFIX DIR      download every blob under PREFIX into DIR
//   node blob.js list CONTAINER PREFIX         print the blob names under PREFIX
const fs = require("fs");
const path = require("path");
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");

const account = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const url = (process.env.AZURITE_BLOB_STORAGE_URL || "http://127.0.0.1:10000") + "/" + account;
const svc = new BlobServiceClient(url, new StorageSharedKeyCredential(account, key));

function files(dir, base = dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) files(p, base, out);
    else out.push(path.relative(base, p).split(path.sep).join("/"));
  }
  return out;
}

async function main() {
  const [cmd, container, prefix, dir] = process.argv.slice(2);
  const c = svc.getContainerClient(container);
  if (cmd === "mkcontainer") return void (await c.createIfNotExists());
  if (cmd === "put") {
    for (const rel of files(dir)) await c.getBlockBlobClient(`${prefix}/${rel}`).uploadFile(path.join(dir, rel));
    return;
  }
  const names = [];
  for await (const b of c.listBlobsFlat({ prefix: prefix + "/" })) names.push(b.name);
  if (cmd === "list") return void console.log(names.join("\n"));
  if (cmd === "get") {
    for (const n of names) {
      const to = path.join(dir, n.slice(prefix.length + 1));
      fs.mkdirSync(path.dirname(to), { recursive: true });
      await c.getBlobClient(n).downloadToFile(to);
    }
    return;
  }
  throw new Error(`unknown command ${cmd}`);
}
main().catch((e) => { console.error(e.message); process.exit(1); });
