# Sourced by the bundled models' recipes: makes $WORK/scenes (procedural rooms with exact
# geometry, textured with scikit-image's sample photographs and dtu-vase's frames, plus the real
# dtu-vase scene) unless it is there. Needs WORK, DATA and SCENES.
if [ ! -d "$WORK/scenes/procedural" ]; then
  rm -rf "$WORK" && mkdir -p "$WORK/textures" "$WORK/scenes"
  skimage=$(.venv/bin/python -c "import skimage.data, os; print(os.path.dirname(skimage.data.__file__))")
  for name in astronaut brick chelsea coffee color grass gravel motorcycle_left retina rocket hubble_deep_field; do
    cp "$skimage/$name".* "$WORK/textures/" 2>/dev/null || true
  done
  .venv/bin/pixelsplat-ns synthesize --output-dir "$WORK/scenes/procedural" --num-scenes "$SCENES" --frames 24 \
    --image-size 128 128 --textures "$WORK/textures" "$DATA/dtu-vase/images" --seed 0
  ln -s "$(realpath "$DATA/dtu-vase")" "$WORK/scenes/dtu-vase"
fi
