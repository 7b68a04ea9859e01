"""What users hand in, checked without torch: photos, faces, captions, trigger words, class nouns and family specs."""
