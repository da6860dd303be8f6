// Reference: face-api.js 0.22.2's own FaceExpressionNet (tfjs-core cpu) on raw 112x112 RGB crops.
// usage: node ref.js MODEL_DIR crops.u8 N  -> JSON [[7 probs in the net's order], ...]
const faceapi = require('face-api.js');
const tf = faceapi.tf;
const fs = require('fs');
(async () => {
  const [dir, file, n] = process.argv.slice(2);
  await tf.setBackend('cpu');
  await faceapi.nets.faceExpressionNet.loadFromDisk(dir);
  const buf = fs.readFileSync(file);
  const out = [];
  for (let i = 0; i < Number(n); i++) {
    const px = new Int32Array(buf.subarray(i * 112 * 112 * 3, (i + 1) * 112 * 112 * 3));
    const t = tf.tensor3d(px, [112, 112, 3], 'int32');
    const p = await faceapi.nets.faceExpressionNet.forward(t);
    out.push(Array.from(p.dataSync()));
    t.dispose(); p.dispose();
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
