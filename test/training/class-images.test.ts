// DreamBooth's class prompts (src/training/class-images.ts): a plain prompt, or [filewords] filled
// with each instance caption minus the instance token (A1111's DreamBooth extension).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FILEWORDS, classPromptsFor } from '../../src/training/class-images.ts';

test('a plain class prompt is the only one, whatever the captions', () => {
  assert.deepEqual(classPromptsFor('a photo of a dog', ['a sks dog on grass'], 'sks'), ['a photo of a dog']);
});

test('[filewords] takes the token out of each caption, keeps punctuation and each prompt once', () => {
  const captions = ['a sks dog on grass', 'SKS, dog, sleeping', 'a sks dog on grass', 'photo of a sksdog'];
  assert.deepEqual(classPromptsFor(`a photo of ${FILEWORDS}`, captions, 'sks'), ['a photo of a dog on grass', 'a photo of dog, sleeping', 'a photo of photo of a sksdog']);
  // A token of two words takes both out; [filewords] may stand twice.
  assert.deepEqual(classPromptsFor(`${FILEWORDS} | ${FILEWORDS}`, ['ohwx man, smiling'], 'ohwx man'), ['smiling | smiling']);
});

test('[filewords] without a caption to fill it is refused with what to do', () => {
  assert.throws(() => classPromptsFor(FILEWORDS, ['', 'sks'], 'sks'), /uses \[filewords\], but the training pictures have no captions to fill it with: add \.txt captions, or give a plain class prompt/);
});
